"""The mpi back-end under real mpiexec (1, 2 and 4 ranks, both schemes) and as a job it starts itself.

Every rank's exit code is recorded by wrapping each rank in `sh -c '"$@"; echo rank R exit C'`, so
"all ranks exit with rank 0's code" is checked, not assumed. The conformance suite covers the
in-process path (`runners.run(..., backend="mpi")`, which starts its own mpiexec job).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import psutil
import pytest

import runners
from runners import testing
from runners._batcher import MIN_ROUNDS
from tests.conftest import run_cli

pytest.importorskip("mpi4py")
from runners_mpi import find_mpiexec, mpiexec_command  # noqa: E402 - needs mpi4py's extra

MPIEXEC = find_mpiexec()
SCHEMES = ["master-worker", "spmd"]
PI = {"samples": 400_000, "item_samples": 50_000}
# Each rank reports its own exit code on stderr; the python command follows as "$@".
PER_RANK = ["sh", "-c", '"$@"; code=$?; echo "rank $PMI_RANK exit $code" >&2; exit $code', "sh"]


def mpiexec(n: int, *extra: str) -> list[str]:
    return [MPIEXEC, *extra, "-n", str(n), *PER_RANK]


def rank_exits(stderr: str) -> dict[int, int]:
    return {int(r): int(c) for r, c in re.findall(r"^rank (\d+) exit (\d+)$", stderr, re.M)}


def sets(params: dict) -> list[str]:
    return [x for k, v in params.items() for x in ("--set", f"{k}={v}")]


@pytest.fixture(scope="module")
def serial_pi():
    return runners.run("pi", params=PI).result


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("n", [1, 2, 4])
def test_mpiexec_ranks_give_serial_result_printed_once_and_exit_0_everywhere(n, scheme, serial_pi):
    done = run_cli("exec", "pi", "--backend", "mpi", "--json", *sets(PI), "--set",
                   f"backend.scheme={scheme}", launcher=mpiexec(n), timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout  # only rank 0 prints
    record = json.loads(lines[0])
    assert record["result"] == serial_pi  # the same seed gives the same estimate as serial
    assert record["check"]["ok"] is True
    assert record["workers"] == (n if scheme == "spmd" else max(1, n - 1))
    assert rank_exits(done.stderr) == dict.fromkeys(range(n), 0)


def test_text_output_is_printed_once_by_rank_0():
    done = run_cli("exec", "tiny", "--backend", "mpi", "--set", "n=50", launcher=mpiexec(3), timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("result   1275") == 1, done.stdout
    assert done.stdout.count("task ") == 1


@pytest.mark.parametrize("scheme", SCHEMES)
def test_item_failure_on_a_worker_rank_exits_1_on_every_rank_with_traceback_once(scheme):
    # chunksize 1 on 3 ranks: item 7 runs on rank 1 or 2 in both schemes (master-worker's rank 0
    # only dispatches; spmd's round 3 hands batch 7 to rank 1).
    done = run_cli("exec", "runners.testing:raise_on_seven", "--backend", "mpi", "--chunksize", "1",
                   "--set", "n=12", "--set", f"backend.scheme={scheme}", launcher=mpiexec(3),
                   timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert done.stderr.count("Error: item 7 (7) raised ValueError: item 7 is unlucky") == 1
    assert done.stderr.count("the worker's traceback:") == 1
    assert done.stderr.count('raise ValueError(f"item {item} is unlucky")') == 1
    assert rank_exits(done.stderr) == dict.fromkeys(range(3), 1)


KILLER = """
    import os, signal, time

    def kill_on_worker(item):
        # the first item a rank other than 0 sees from 3 on: SIGKILL, mid-run
        if os.environ.get("PMI_RANK", "0") != "0" and item >= 3:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.02)
        return item
"""


@pytest.fixture
def killer(tmp_path):
    path = tmp_path / "killer.py"
    path.write_text(textwrap.dedent(KILLER))
    return f"{path}:kill_on_worker"


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_rank_killed_mid_run_ends_the_job_non_zero_with_nothing_left(scheme, killer):
    # No per-rank wrapper here: the rank itself must be what dies, as hydra then sees it.
    done = run_cli("exec", killer, "--backend", "mpi", "--chunksize", "1", "--set", "n=40",
                   "--set", f"backend.scheme={scheme}", launcher=[MPIEXEC, "-n", "3"], timeout=60)
    assert done.returncode != 0
    assert "BAD TERMINATION" in done.stdout and "Killed (signal 9)" in done.stdout  # hydra's report
    # run_cli has checked that no mpiexec, hydra_pmi_proxy or python rank of this run is left, and
    # conftest that no segment of its ranks is (tests/test_mpi_jobs.py: within a few seconds)


def test_without_mpiexec_the_cli_starts_its_own_ranks(serial_pi):
    done = run_cli("exec", "pi", "--backend", "mpi", "--workers", "2", "--json", *sets(PI), timeout=120)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["result"] == serial_pi
    assert record["processes"] == 2


@pytest.mark.parametrize("task", ["pi", "primes", "tiny"])
def test_master_worker_scheme_in_process_equals_serial(task):
    params = {"pi": PI, "primes": {"start": 1_000, "stop": 6_000}, "tiny": {"n": 1_000}}[task]
    record = runners.run(task, backend="mpi", workers=2, params=params, options={"scheme": "master-worker"})
    assert record.result == runners.run(task, params=params).result
    assert record.check.ok


def test_spmd_gets_a_few_whole_rounds_of_equal_batches_and_the_serial_result():
    # spmd deals one batch per rank per round, which fixes each rank's share: its batches come back a
    # round at a time, alike within each, in a few rounds (not a pool's shrinking tail).
    n = 400_000
    sizes: list[int] = []
    record = runners.run("tiny", backend="mpi", workers=2, params={"n": n}, progress=sizes.append)
    assert record.result == runners.run("tiny", params={"n": n}).result
    # One round of one-item batches, and the next sized from it (not a second round sent before any
    # result was back, of one item each again)
    assert sizes[:2] == [1, 1] and sizes[2] > 1, sizes
    measured = sizes[2:]
    rounds = [measured[i:i + 2] for i in range(0, len(measured), 2)]
    assert all(len(set(r)) == 1 for r in rounds[:-1]) and rounds[-1][0] >= rounds[-1][-1], sizes
    assert len(rounds) <= MIN_ROUNDS + 1, sizes  # + 1: a cold first measure may bound one


def test_spmd_deals_the_next_round_while_a_slower_rank_finishes_this_one():
    # Rounds of one item each: the root's items take 0.6 s, rank 1's 0.05 s. Behind a barrier at each
    # round's end, rank 1 would start its next item only as the root's ended; dealt ahead, from the
    # second round on, rank 1 starts its next item while the root's is still running.
    ran = runners.run(testing.map_task(testing.timed_sleep), backend="mpi", workers=2, chunksize=1,
                      params={"items": [0.6, 0.05] * 4}).result  # (pid, start, end) by item
    root, other = ran[0::2], ran[1::2]
    assert len({r[0] for r in root}) == 1 and len({r[0] for r in other}) == 1, ran  # batch i on rank i
    assert root[0][0] != other[0][0], ran
    for k in (1, 2):  # rounds 2 and 3: rank 1's item of the next round began before the root's ended
        assert other[k + 1][1] < root[k][2], (k, ran)
    # the first round is not dealt ahead: the second is sized from its results
    assert other[1][1] >= root[0][2] - 0.01, ran


def loopback_links(_: object) -> list[tuple[tuple, tuple, bool]]:
    """This process's TCP connections: (its address, its peer's, whether each message leaves at once)."""
    links = []
    for link in psutil.Process().net_connections("tcp"):
        if link.raddr and link.status == psutil.CONN_ESTABLISHED:
            with socket.socket(fileno=os.dup(link.fd)) as sock:
                nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            links.append((tuple(link.laddr), tuple(link.raddr), bool(nodelay)))
    return links


def test_the_relay_to_a_spawned_job_sends_each_message_at_once_both_ways():
    # With Nagle's algorithm (TCP's default) a small message sent while the last one is unacknowledged
    # waits for that ack, which the other end delays by up to 40 ms: each pass's first batches reached
    # rank 0 40 ms late, and its last results reached the driver 23 ms late.
    task = testing.map_task(loopback_links)
    with runners.plan(runners.Job(task, backend="mpi", workers=2)).make_backend() as backend:
        job = runners.plan(runners.Job(task, backend="mpi", workers=2, chunksize=1, params={"items": [0, 0]}))
        rank0 = runners.run_on(backend, job).result[0]  # batch 0 of a round runs on rank 0
        driver = loopback_links(None)
    relay = [(ours, theirs) for here, there, ours in driver for there_, here_, theirs in rank0
             if (here, there) == (here_, there_)]
    assert relay == [(True, True)], (driver, rank0)


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "without-pidfd"])
def test_the_relay_tells_a_job_that_exits_from_one_that_runs_on_and_leaves_no_descriptor(pidfd, monkeypatch):
    from runners_mpi._relay import exited

    if not pidfd:  # not Linux, or older than 5.3: Popen.wait's own polling
        monkeypatch.delattr(os, "pidfd_open", raising=False)

    def pidfds() -> int:
        found = 0
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                found += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]"
        return found

    before = pidfds()
    job = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read(); sys.exit(3)"],
                           stdin=subprocess.PIPE)
    try:
        assert not exited(job, 0.05) and job.returncode is None  # still running: not reaped either
        job.stdin.close()  # now it ends
        assert exited(job, 30) and job.returncode == 3
        assert exited(job, 0)  # and again, once reaped
    finally:
        job.kill()
        job.wait()
    assert pidfds() == before


def test_a_rank_looks_again_within_a_millisecond_early_in_a_wait_and_within_5_ms_later(monkeypatch):
    # Waits inside a run are short (one rank's batch ending a few ms after another's), and each pause
    # is a message's added latency: capped at 5 ms from the start, tiny 1M's compute took 1.25x longer.
    from runners_mpi import _waits

    clock = [100.0]
    pauses: list[tuple[float, float]] = []  # (seconds into the wait, pause)

    def sleep(seconds: float) -> None:
        pauses.append((clock[0] - 100.0, seconds))
        clock[0] += seconds

    # this module's clock only: other threads of this process keep theirs
    monkeypatch.setattr(_waits, "time", types.SimpleNamespace(monotonic=lambda: clock[0], sleep=sleep))
    assert _waits.poll(lambda: clock[0] >= 100.5)
    early = [p for at, p in pauses if at < _waits.BRISK_SECONDS]
    late = [p for at, p in pauses if at >= _waits.BRISK_SECONDS + _waits.POLL_SECONDS]
    assert early[0] <= 0.0001 and max(early) == _waits.BRISK_PAUSE == 0.001, pauses
    assert max(late) == min(late[1:]) == _waits.POLL_SECONDS == 0.005, pauses
    assert not _waits.poll(lambda: False, deadline=clock[0] + 0.05)  # a deadline still ends it


ABORTING_RANK = textwrap.dedent("""
    import sys, time
    from runners_mpi import _waits

    class Comm:  # stands in for COMM_WORLD: records what mpiexec had not yet read when Abort came
        def Abort(self, code):
            print(_waits.unread(2), round(time.monotonic() - began, 2), file=open(sys.argv[1], "w"))
            sys.exit(code)

    sys.stderr.write("the line that says why" * 100 + "\\n")  # line-buffered: in the pipe, unread
    began = time.monotonic()
    _waits.abort(Comm(), 3)
""")


@pytest.mark.parametrize("reader_pause", [0.3, 3.0])
def test_a_rank_aborts_once_mpiexec_has_read_its_last_words_waiting_a_second_at_most(reader_pause, tmp_path):
    # hydra stops reading a rank's output as the job aborts: without this wait, the line printed just
    # before MPI_Abort (why the job ended) was lost in 3 of 100 jobs
    from runners_mpi import _waits

    said = tmp_path / "at-abort"
    rank = subprocess.Popen([sys.executable, "-c", ABORTING_RANK, str(said)], stderr=subprocess.PIPE,
                            text=True)
    assert _waits.poll(lambda: _waits.unread(rank.stderr.fileno()) > 0, time.monotonic() + 30)
    time.sleep(reader_pause)  # mpiexec's proxy, busy
    err = rank.stderr.read()
    assert rank.wait(timeout=30) == 3
    unread, seconds = said.read_text().split()
    if reader_pause < _waits.LAST_WORDS_SECONDS:  # it waited for the read, then aborted
        assert int(unread) == 0 and float(seconds) >= reader_pause - 0.05, (unread, seconds)
        assert err.count("the line that says why") == 100
    else:  # a reader that does not read does not hold the job's end for longer than the bound
        assert int(unread) > 0, unread
        assert _waits.LAST_WORDS_SECONDS - 0.05 <= float(seconds) < _waits.LAST_WORDS_SECONDS + 1, seconds


def test_master_worker_item_failure_in_process_keeps_type_item_and_traceback():
    with pytest.raises(runners.TaskError) as caught:
        runners.run(testing.map_task(testing.raise_on_seven), backend="mpi", workers=2, chunksize=3,
                    params={"items": list(range(20))}, options={"scheme": "master-worker"})
    assert isinstance(caught.value.exception, ValueError) and caught.value.index == 7
    assert "raise_on_seven" in caught.value.remote_traceback


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_spawned_job_losing_a_rank_is_a_worker_lost_naming_sigkill(scheme, killer):
    task = runners.load_task(killer)
    with pytest.raises(runners.WorkerLost, match="SIGKILL") as caught:
        runners.run(task, backend="mpi", workers=2, chunksize=1, retries=0,
                    params={"n": 40}, options={"scheme": scheme})
    assert caught.value.items and caught.value.exitcode == -9


def test_a_lost_rank_is_retried_on_a_fresh_job(tmp_path):
    items = [[i, str(tmp_path / "crashed") if i == 2 else ""] for i in range(6)]
    record = runners.run(testing.map_task(testing.crash_once), backend="mpi", workers=2, chunksize=1,
                         params={"items": items})
    assert record.result == list(range(6))


def test_spawn_off_fails_at_once_with_the_mpiexec_command_to_use():
    done = run_cli("exec", "pi", "--backend", "mpi", "--workers", "3", "--set", "backend.spawn=false",
                   timeout=60)
    assert done.returncode == 2
    assert f"{MPIEXEC} -n 3 " in done.stderr and "-m runners exec pi --backend mpi" in done.stderr


def test_a_missing_hostfile_is_a_config_error_naming_it(tmp_path):
    missing = tmp_path / "no-such-hostfile"
    done = run_cli("exec", "tiny", "--backend", "mpi", "--set", f"backend.hostfile={missing}", timeout=60)
    assert done.returncode == 2
    assert str(missing) in done.stderr and "no such file" in done.stderr
    under = run_cli("exec", "tiny", "--backend", "mpi", "--set", f"backend.hostfile={missing}",
                    launcher=mpiexec(2), timeout=60)
    assert under.stderr.count(f"no such file {str(missing)!r}") == 1  # rank 0 says it, once
    assert rank_exits(under.stderr) == {0: 2, 1: 2}


def test_a_hostfile_of_localhost_slots_works_under_mpiexec_and_when_spawned(tmp_path, serial_pi):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("localhost:4\n")
    under = run_cli("exec", "pi", "--backend", "mpi", "--json", *sets(PI),
                    launcher=mpiexec(3, "-f", str(hostfile)), timeout=120)
    assert under.returncode == 0, under.stderr
    assert json.loads(under.stdout)["result"] == serial_pi
    spawned = run_cli("exec", "pi", "--backend", "mpi", "--json", "--workers", "2", *sets(PI),
                      "--set", f"backend.hostfile={hostfile}", timeout=120)
    assert spawned.returncode == 0, spawned.stderr
    assert json.loads(spawned.stdout)["result"] == serial_pi


def test_mpiexec_command_is_what_batch_runners_launch(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("localhost:2\n")
    line = mpiexec_command(4, ["-m", "runners", "exec", "pi"], hostfile=str(hostfile))
    assert line[0] == MPIEXEC and line[1:5] == ["-f", str(hostfile), "-n", "4"]
    assert line[6:] == ["-m", "runners", "exec", "pi"]
    with pytest.raises(runners.ConfigError, match="no-such"):
        mpiexec_command(2, [], hostfile=str(tmp_path / "no-such"))


# -- reaching other hosts: hydra's launcher, task files, ranks that never start -------------------------

LAUNCHER = """#!/bin/sh
# hydra's remote launcher, as `ssh HOST COMMAND` is: it runs COMMAND here, and says where it was sent
echo "$1" >> "{log}"
shift
exec sh -c "$*"
"""


def test_backend_launcher_is_what_reaches_the_hosts_of_the_hostfile(tmp_path, serial_pi):
    # 127.0.0.2 is this machine, but not by the name hydra knows it by: hydra launches its proxy there
    # through the launcher, as it would on another machine
    hostfile, launcher, log = tmp_path / "hosts", tmp_path / "launcher", tmp_path / "launched"
    hostfile.write_text("127.0.0.2:2\n")
    launcher.write_text(LAUNCHER.format(log=log))
    launcher.chmod(0o755)
    done = run_cli("exec", "pi", "--backend", "mpi", "--workers", "2", "--json", *sets(PI),
                   "--set", f"backend.hostfile={hostfile}", "--set", "backend.launcher=rsh",
                   "--set", f"backend.launcher_exec={launcher}", timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == serial_pi
    assert log.read_text().split() == ["127.0.0.2"]  # one proxy, started by our launcher


@pytest.mark.parametrize(("option", "said"), [
    ("backend.launcher=sshh", "backend.launcher: expected one of 'ssh', 'rsh'"),
    ("backend.launcher_exec={missing}", "backend.launcher_exec: no such file '{missing}'"),
    ("backend.launcher_exec={plain}", "backend.launcher_exec: not executable '{plain}'"),
])
def test_a_bad_launcher_option_is_a_config_error_naming_it(option, said, tmp_path):
    names = {"missing": tmp_path / "no-such-ssh", "plain": tmp_path / "plain"}
    names["plain"].write_text("not a program\n")
    done = run_cli("exec", "tiny", "--backend", "mpi", "--set", option.format(**names), timeout=60)
    assert done.returncode == 2, done.stderr
    assert said.format(**names) in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_mpiexec_command_passes_the_launcher_to_hydra(tmp_path):
    line = mpiexec_command(2, ["-m", "runners_mpi", "spmd"], launcher="ssh", launcher_exec=MPIEXEC)
    assert line[1:7] == ["-launcher", "ssh", "-launcher-exec", MPIEXEC, "-n", "2"]


SHIPPED = """
def square(x):
    return x * x
"""


def load(name: str, path: Path, package: bool = False) -> types.ModuleType:
    """Import `path` as `name` without its folder on sys.path."""
    folder = [str(path.parent)] if package else None
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=folder)
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_task_module_the_ranks_cannot_import_reaches_them_from_the_driver(tmp_path):
    # The module's folder is on no sys.path: the spawned ranks can import it, and the package it
    # imports, only from what the driver sends them, as ranks on another host that lacks the files would
    tag = tmp_path.name.replace("-", "_")
    (tmp_path / f"doubling_{tag}").mkdir()
    (tmp_path / f"doubling_{tag}" / "__init__.py").write_text("from .factor import FACTOR\n")
    (tmp_path / f"doubling_{tag}" / "factor.py").write_text("FACTOR = 2\n")
    path = tmp_path / f"shipped_{tag}.py"
    path.write_text(f"import doubling_{tag}\n\ndef square(x):\n    return doubling_{tag}.FACTOR * x * x\n")
    try:
        load(f"doubling_{tag}", tmp_path / f"doubling_{tag}" / "__init__.py", package=True)
        module = load(path.stem, path)
        record = runners.run(testing.map_task(module.square), backend="mpi", workers=2, chunksize=1,
                             params={"items": list(range(8))})
    finally:
        for name in (path.stem, f"doubling_{tag}", f"doubling_{tag}.factor"):
            sys.modules.pop(name, None)
    assert record.result == [2 * x * x for x in range(8)]


def test_ranks_that_fail_before_mpi_starts_end_the_users_job_at_once_with_their_error(tmp_path):
    # The task file is only where rank 0 runs from: the other ranks exit 2 before MPI starts, and rank
    # 0, waiting in MPI_Init for them, gives up within seconds instead of waiting forever
    (tmp_path / "only_here.py").write_text(SHIPPED)
    per_rank_folder = ["sh", "-c", f'[ "$PMI_RANK" = 0 ] && cd {tmp_path}; exec "$@"', "sh"]
    began = time.monotonic()
    done = run_cli("exec", "only_here.py:square", "--backend", "mpi", "--set", "n=4",
                   launcher=[MPIEXEC, "-n", "3", *per_rank_folder], timeout=60)
    seconds = time.monotonic() - began
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("no such file 'only_here.py'") == 2  # ranks 1 and 2 say why
    assert "MPI did not start within" in done.stderr  # rank 0 says why it gave up
    assert seconds < 30, seconds
