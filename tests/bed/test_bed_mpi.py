"""The mpi back-end across the bed's three hosts (issue 15, items 3 and 4).

Two forms, both driven from h1: the user's own `mpiexec -f HOSTFILE -launcher rsh -launcher-exec RSH`
around `runners exec`, and the job runners starts itself with `backend.hostfile`. Every host has its own
hostname and /dev/shm, so ranks on different hosts talk over the bed's TCP. After each test no process
may be left on any host; a test that measures a hang ends what hangs itself, by PID.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.bed.runs import (
    HostRun,
    end_everything,
    hosts_of,
    idle_within,
    make_beat,
    runners_command,
    sieve_count,
)

pytest.importorskip("mpi4py")
from runners_mpi import find_mpiexec  # noqa: E402 - needs mpi4py's extra

MPIEXEC = find_mpiexec()
PRIMES = sieve_count(100_000, 200_000)  # the primes task's default range
# Issue 15: "every way a rank ends abnormally must end the job on every host within a few seconds"
JOB_ENDS_SECONDS = 10


@pytest.fixture(autouse=True)
def hosts_left_idle(bed):
    """Each test starts on idle hosts and must leave them so (within a few seconds of its last run)."""
    end_everything(bed)
    yield
    left = idle_within(bed, JOB_ENDS_SECONDS)
    end_everything(bed)
    assert not left, f"processes left on the bed's hosts: {left}"


def users_mpiexec(bed, ranks: int = 3) -> list[str]:
    launcher = ["-launcher", "rsh", "-launcher-exec", str(bed.rsh)]
    return [MPIEXEC, "-f", str(bed.hostfile), *launcher, "-n", str(ranks)]


def killed_hydra_temp(folder: Path) -> dict[str, str]:
    """A TMPDIR outside the test's own for an mpiexec that may be killed: it then leaves its files there."""
    return {"TMPDIR": str(folder)}


def hydra_environment(bed) -> dict[str, str]:
    """What the job runners starts needs today to use the bed's launcher: hydra's own variables."""
    return {"HYDRA_LAUNCHER": "rsh", "HYDRA_LAUNCHER_EXEC": str(bed.rsh)}


def test_users_mpiexec_over_three_hosts_prints_the_sieve_count_once_naming_every_host(bed, timings):
    run = HostRun(bed, "h1", [*users_mpiexec(bed), *runners_command("exec", "primes", "--backend", "mpi",
                                                                    "--json")])
    done = run.finish(timeout=120)
    timings.append(("mpi: user's mpiexec, primes over 3 hosts", done.seconds, "whole run"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout  # only rank 0 prints
    record = json.loads(lines[0])
    assert record["result"] == PRIMES
    assert set(hosts_of(bed, record["nodes"])) == set(bed.hosts), record["nodes"]


def test_a_job_runners_starts_with_backend_hostfile_spans_the_three_hosts(bed, timings):
    run = HostRun(bed, "h1", runners_command("exec", "primes", "--backend", "mpi", "--workers", "3", "--json",
                                             "--set", f"backend.hostfile={bed.hostfile}"),
                  env=hydra_environment(bed))
    done = run.finish(timeout=120)
    timings.append(("mpi: backend.hostfile, primes over 3 hosts", done.seconds, "whole run"))
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["result"] == PRIMES
    assert set(hosts_of(bed, record["nodes"])) == set(bed.hosts), record["nodes"]


def test_backend_launcher_reaches_the_other_hosts_without_environment_variables(bed):
    run = HostRun(bed, "h1", runners_command("exec", "primes", "--backend", "mpi", "--workers", "3", "--json",
                                             "--set", f"backend.hostfile={bed.hostfile}",
                                             "--set", "backend.launcher=rsh",
                                             "--set", f"backend.launcher_exec={bed.rsh}"))
    done = run.finish(timeout=120)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["result"] == PRIMES and set(hosts_of(bed, record["nodes"])) == set(bed.hosts)


def test_a_task_file_only_the_driver_has_reaches_the_ranks_of_a_job_runners_starts(bed):
    beat = make_beat(bed, "h1", seconds=0.05)
    run = HostRun(bed, "h1", runners_command("exec", beat.task, "--set", "n=12", "--backend", "mpi",
                                             "--workers", "3", "--json",
                                             "--set", f"backend.hostfile={bed.hostfile}"),
                  env=hydra_environment(bed))
    done = run.finish(timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == [x * x for x in range(12)]


def test_ranks_that_cannot_load_the_task_end_the_users_job_at_once(bed, timings, tmp_path):
    beat = make_beat(bed, "h1", seconds=0.05)  # h2 and h3 do not have the file
    run = HostRun(bed, "h1", [*users_mpiexec(bed), *runners_command("exec", beat.task, "--set", "n=12",
                                                                    "--backend", "mpi")],
                  env=killed_hydra_temp(tmp_path))
    done = run.finish(timeout=JOB_ENDS_SECONDS)
    timings.append(("mpi: user's mpiexec, ranks 1-2 cannot load the task", done.seconds,
                    done.measured("to the job's end")))
    end_everything(bed)
    assert done.returncode == 2, done.stderr
    assert "no such file" in done.stderr


def test_a_host_killed_under_the_users_mpiexec_ends_the_job_on_every_host(bed, timings, tmp_path):
    beat = make_beat(bed, "shared", seconds=0.5)
    run = HostRun(bed, "h1", [*users_mpiexec(bed), *runners_command("exec", beat.task, "--set", "n=60",
                                                                    "--chunksize", "1", "--backend", "mpi")],
                  env=killed_hydra_temp(tmp_path))
    beat.wait_until_busy("h2")
    fault = time.monotonic()
    bed.crash("h2")
    done = run.finish(timeout=JOB_ENDS_SECONDS, since=fault)
    left = idle_within(bed, max(0.0, fault + JOB_ENDS_SECONDS - time.monotonic()))
    timings.append(("mpi: user's mpiexec, h2 killed", time.monotonic() - fault, "fault to every host idle"))
    assert done.returncode not in (0, None), done.stderr
    assert not left, f"still running {JOB_ENDS_SECONDS} s after h2 died: {left}"


def test_a_host_killed_in_a_job_runners_starts_is_retried_on_a_fresh_job(bed, timings):
    beat = make_beat(bed, "shared", seconds=0.2)
    run = HostRun(bed, "h1", runners_command("exec", beat.task, "--set", "n=45", "--chunksize", "1",
                                             "--backend", "mpi", "--workers", "3", "--json",
                                             "--set", f"backend.hostfile={bed.hostfile}"),
                  env=hydra_environment(bed))
    beat.wait_until_busy("h2")
    fault = time.monotonic()
    bed.crash("h2")  # its processes die; the host itself stays up and takes the fresh job's rank
    done = run.finish(timeout=60, since=fault)
    timings.append(("mpi: backend.hostfile, h2 killed, retried", done.seconds, "fault to the right answer"))
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["result"] == [x * x for x in range(45)]
    assert any(attempt != "1" for attempt in record["attempts"]), record["attempts"]


def test_a_sigkilled_driver_ends_the_job_it_started_on_every_host(bed, timings):
    beat = make_beat(bed, "shared", seconds=0.5)
    run = HostRun(bed, "h1", runners_command("exec", beat.task, "--set", "n=60", "--chunksize", "1",
                                             "--backend", "mpi", "--workers", "3",
                                             "--set", f"backend.hostfile={bed.hostfile}"),
                  env=hydra_environment(bed))
    beat.wait_until_busy("h2")
    driver = run.find("runners", "exec")
    fault = time.monotonic()
    driver.send_signal(signal.SIGKILL)
    left = idle_within(bed, JOB_ENDS_SECONDS)
    timings.append(("mpi: backend.hostfile, driver SIGKILLed", time.monotonic() - fault,
                    "to every host idle" if not left else "still running at the limit"))
    end_everything(bed)
    run.finish(timeout=10)
    # A SIGKILLed runner cannot remove its scratch folder; the next run's sweep on its host does (README).
    sweep = HostRun(bed, "h1", [sys.executable, "-c", "import runners; print(runners.sweep_scratch())"])
    swept = sweep.finish(timeout=30)
    assert swept.returncode == 0 and "runners-mpi-" in swept.stdout, swept
    assert not left, f"still running {JOB_ENDS_SECONDS} s after the driver was killed: {left}"


def test_a_cut_link_under_the_users_mpiexec_ends_the_job_at_its_time_limit_naming_the_host(bed, timings,
                                                                                           tmp_path):
    beat = make_beat(bed, "shared", seconds=0.5)
    limit = 5
    command = runners_command("exec", beat.task, "--set", "n=60", "--chunksize", "1", "--backend", "mpi",
                              "--run-timeout", str(limit))
    run = HostRun(bed, "h1", [*users_mpiexec(bed), *command], env=killed_hydra_temp(tmp_path))
    beat.wait_until_busy("h2")
    fault = time.monotonic()
    bed.cut("h2")
    try:
        done = run.finish(timeout=limit + JOB_ENDS_SECONDS, since=fault)
    finally:
        bed.mend("h2")
    timings.append((f"mpi: user's mpiexec, h2's link cut, run_timeout {limit} s", done.seconds,
                    done.measured("fault to the job's end")))
    end_everything(bed)
    assert done.returncode == 1, done.stderr
    assert "run_timeout" in done.stderr and "h2" in done.stderr, done.stderr
