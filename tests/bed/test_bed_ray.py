"""The ray back-end on a Ray cluster across the bed (issue 15, items 1 and 5): a head on h1 and nodes on
h2 and h3, one CPU each, started with `ray start` and token authentication; drivers on h1 and h3 join
it with `backend.address`. Faults strike h2 or h3 while one of their items runs."""

from __future__ import annotations

import json
import time

import pytest

import runners
from tests.bed.clusters import RayCluster
from tests.bed.runs import (
    HostRun,
    error_line,
    hosts_of,
    make_beat,
    sieve_count,
)

pytestmark = pytest.mark.skipif(not runners.backend_status("ray")[0], reason="ray is not installed")

PRIMES = sieve_count(100_000, 200_000)  # the primes task's default range
ITEMS = 24  # beat items of 0.5 s: ~4 s of work on 3 CPUs, so a fault lands mid-run


@pytest.fixture(scope="module")
def ray_cluster(bed, timings):
    began = time.monotonic()
    cluster = RayCluster(bed)
    timings.append(("ray: ray start on h1, h2, h3 (token auth)", time.monotonic() - began, "to 3 live nodes"))
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def primes_from_h1(bed, ray_cluster, timings) -> dict:
    run = HostRun(bed, "h1", ray_cluster.command("primes", "--workers", "2"), env=ray_cluster.client_env)
    done = run.finish(timeout=180)
    timings.append(("ray: primes from h1", done.seconds, "whole run"))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_primes_from_h1_is_the_sieve_count_with_items_on_several_hosts(bed, primes_from_h1):
    assert primes_from_h1["result"] == PRIMES
    hosts = hosts_of(bed, primes_from_h1["nodes"])
    assert len(hosts) >= 2 and set(hosts) <= set(bed.hosts), primes_from_h1["nodes"]


def test_workers_of_a_joined_cluster_is_its_cpu_count(primes_from_h1, ray_cluster):
    assert primes_from_h1["workers"] == ray_cluster.cpus


def test_a_task_file_only_the_driver_on_h3_has_runs_on_the_other_hosts(bed, ray_cluster, timings):
    ray_cluster.ready(*bed.hosts)
    beat = make_beat(bed, "h3", seconds=0.05)  # in h3's private folder
    run = HostRun(bed, "h3", ray_cluster.command(beat.task, "--set", f"n={ITEMS}", "--chunksize", "1"),
                  env=ray_cluster.client_env)
    done = run.finish(timeout=180)
    timings.append(("ray: a task file only h3 has, from h3", done.seconds, "whole run"))
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["result"] == [x * x for x in range(ITEMS)]
    assert beat.ticks("h1") or beat.ticks("h2"), hosts_of(bed, record["nodes"])


def test_a_client_without_the_token_is_refused_with_a_message_that_says_so(bed, ray_cluster, timings):
    run = HostRun(bed, "h3", ray_cluster.command("tiny"), env={"RAY_USAGE_STATS_ENABLED": "0"})
    done = run.finish(timeout=120)
    timings.append(("ray: a client without the token", done.seconds, "to its error"))
    assert done.returncode == 1, done.stderr
    assert "token" in error_line(done.stderr) and ray_cluster.address in error_line(done.stderr), done.stderr
    assert done.seconds < 15, done.stderr  # Ray's own retries took ~21 s; the probe answers at once


@pytest.fixture(scope="module")
def h2_killed_mid_run(bed, ray_cluster, timings):
    """A run from h1 during which every process of h2 is SIGKILLed (its raylet, its workers)."""
    done = ray_cluster.struck_run("h2", "kill", ITEMS)
    timings.append(("ray: h2 killed mid-run", done.seconds, "fault to the run's end"))
    return done


def test_a_node_killed_mid_run_ends_with_the_right_answer_on_the_others(h2_killed_mid_run):
    done = h2_killed_mid_run
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == [x * x for x in range(ITEMS)]


def test_the_batch_lost_with_a_node_is_not_counted_under_an_empty_node_name(h2_killed_mid_run):
    nodes = json.loads(h2_killed_mid_run.stdout)["nodes"]
    assert "" not in nodes, nodes


def test_a_node_killed_with_retries_off_is_a_clear_error_naming_it(bed, ray_cluster, timings):
    done = ray_cluster.struck_run("h3", "kill", ITEMS, "--retries", "0")
    timings.append(("ray: h3 killed mid-run, --retries 0", done.seconds, "fault to the error"))
    assert done.returncode == 1, done.stderr
    assert "lost" in error_line(done.stderr) and bed.hosts["h3"].ip in error_line(done.stderr), done.stderr
    assert "Traceback" not in done.stderr


def test_a_node_cut_off_mid_run_ends_with_the_right_answer_on_the_others(bed, ray_cluster, timings):
    done = ray_cluster.struck_run("h2", "cut", ITEMS)
    timings.append(("ray: h2's link cut mid-run", done.seconds,
                    done.measured("fault to the run's end")))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == [x * x for x in range(ITEMS)]


def test_batches_quieter_than_the_nodes_ping_limit_are_not_lost(bed, ray_cluster, timings):
    """The keepalive that bounds a cut (README, "Scale out") is set on the nodes too: measured with it
    on the driver alone, each node's gRPC server (which accepts a ping a minute from a quiet call unless
    its own keepalive is shorter) sent GOAWAY "too_many_pings" ~20 s into a batch that sends nothing,
    and every batch of 40 s was lost (WorkerCrashedError)."""
    ray_cluster.ready(*bed.hosts)
    beat = make_beat(bed, "h1", seconds=30)
    command = ray_cluster.command(beat.task, "--set", "n=3", "--chunksize", "1", "--retries", "0")
    done = HostRun(bed, "h1", command, env=ray_cluster.client_env).finish(timeout=180)
    timings.append(("ray: 3 batches of 30 s, 5 s keepalive", done.seconds, "whole run"))
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["result"] == [0, 1, 4] and record["attempts"] == {"1": 3}, record
