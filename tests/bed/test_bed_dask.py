"""The dask back-end on a Dask cluster across the bed (issue 15, item 2): `dask scheduler` on h1 and one
single-thread `dask worker` each on h2 and h3, all bound to their bed addresses; drivers on h1 and h3
join with `backend.address`. Faults strike h2 or h3 while one of their items runs. (Dask's plain tcp://
has no authentication, so Ray's refused-token case has no Dask counterpart.)"""

from __future__ import annotations

import json
import time

import pytest

from tests.bed.clusters import DaskCluster
from tests.bed.runs import (
    HostRun,
    error_line,
    hosts_of,
    make_beat,
    sieve_count,
)

pytest.importorskip("distributed")

PRIMES = sieve_count(100_000, 200_000)  # the primes task's default range
ITEMS = 16  # beat items of 0.5 s: ~4 s of work on 2 workers, so a fault lands mid-run


@pytest.fixture(scope="module")
def dask_cluster(bed, timings):
    began = time.monotonic()
    cluster = DaskCluster(bed)
    timings.append(("dask: scheduler on h1, workers on h2, h3", time.monotonic() - began, "to 2 workers"))
    try:
        yield cluster
    finally:
        cluster.close()


def test_primes_from_h1_is_the_sieve_count_on_both_workers_hosts(bed, dask_cluster, timings):
    run = HostRun(bed, "h1", dask_cluster.command("primes", "--workers", "5"))
    done = run.finish(timeout=120)
    timings.append(("dask: primes from h1", done.seconds, "whole run"))
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["result"] == PRIMES
    assert set(hosts_of(bed, record["nodes"])) == {"h2", "h3"}, record["nodes"]
    assert record["workers"] == 2  # the cluster's worker threads, not --workers


def test_a_task_file_only_the_driver_on_h3_has_runs_on_h2_too(bed, dask_cluster, timings):
    dask_cluster.ready(*bed.hosts)
    beat = make_beat(bed, "h3", seconds=0.05)  # in h3's private folder
    run = HostRun(bed, "h3", dask_cluster.command(beat.task, "--set", f"n={ITEMS}", "--chunksize", "1"))
    done = run.finish(timeout=120)
    timings.append(("dask: a task file only h3 has, from h3", done.seconds, "whole run"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == [x * x for x in range(ITEMS)]
    assert beat.ticks("h2")


def test_a_worker_killed_mid_run_ends_with_the_right_answer_on_the_other(bed, dask_cluster, timings):
    done = dask_cluster.struck_run("h2", "kill", ITEMS)
    timings.append(("dask: h2 killed mid-run", done.seconds, "fault to the run's end"))
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["result"] == [x * x for x in range(ITEMS)]
    assert "" not in record["nodes"], record["nodes"]
    # runners' retries policy reran the lost batch, not the scheduler behind its back: it is counted
    assert record["lost_workers"] == 1 and record["attempts"].get("2", 0) >= 1, record


def test_a_worker_killed_with_retries_off_is_a_clear_error_naming_it(bed, dask_cluster, timings):
    done = dask_cluster.struck_run("h3", "kill", ITEMS, "--retries", "0")
    timings.append(("dask: h3 killed mid-run, --retries 0", done.seconds, "fault to the run's end"))
    assert done.returncode == 1, done.stderr
    assert "lost" in error_line(done.stderr) and bed.hosts["h3"].ip in error_line(done.stderr), done.stderr


def test_a_worker_cut_off_mid_run_ends_with_the_right_answer_on_the_other(bed, dask_cluster, timings):
    done = dask_cluster.struck_run("h2", "cut", ITEMS)
    timings.append(("dask: h2's link cut mid-run", done.seconds,
                    done.measured("fault to the run's end")))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == [x * x for x in range(ITEMS)]
