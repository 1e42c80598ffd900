"""MPI jobs from outside: what their processes listen on, and that a job's MPICH segments go with it
however it ends. Both forms: the job runners starts itself (`--workers 2`), and the user's own
`mpiexec -n 2 python -m runners exec ... --backend mpi`.

Segments are told apart by run: the conftest Witness records which segments the ranks of each run
(by their RUNNERS_TEST_TAG) mapped, so another suite's MPI jobs on the machine never count here.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

import runners
from tests.conftest import ROOT, run_cli, tagged_processes

pytest.importorskip("mpi4py")
from runners_mpi import find_mpiexec  # noqa: E402 - needs mpi4py's extra

MPIEXEC = find_mpiexec()
SWEPT_WITHIN = 5.0  # seconds from the job's end until its segments are gone
PI = ("pi", "--set", "samples=1200000", "--set", "item_samples=50000", "--json")


def listening_while(args: list[str], launcher: list[str] | None = None,
                    env: dict[str, str] | None = None) -> tuple[object, dict[str, set[tuple[str, int]]]]:
    """Run `runners ARGS` with run_cli and sample, from outside, every socket its processes (mpiexec,
    hydra's proxies, the ranks) listen on: {process name: {(ip, port)}}."""
    marker, seen, done_event = uuid.uuid4().hex, {}, threading.Event()

    def sample() -> None:
        while not done_event.is_set():
            for proc in psutil.process_iter():
                try:
                    if proc.environ().get("RUNNERS_LISTEN_MARKER") == marker:
                        seen.setdefault(proc.name(), set()).update(
                            (c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet")
                            if c.status == psutil.CONN_LISTEN)
                except psutil.Error:
                    continue
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        done = run_cli(*args, launcher=launcher, env={**(env or {}), "RUNNERS_LISTEN_MARKER": marker},
                       timeout=180)
    finally:
        done_event.set()
        sampler.join(timeout=30)
    return done, seen


def off_loopback(seen: dict[str, set[tuple[str, int]]]) -> dict[str, set[tuple[str, int]]]:
    return {name: {(ip, port) for ip, port in pairs if not ipaddress.ip_address(ip).is_loopback}
            for name, pairs in seen.items()}


def assert_only_hydras_control_port_is_off_loopback(seen: dict[str, set[tuple[str, int]]]) -> None:
    """Hydra binds its PMI control port (proxies connect back to it) to every interface and has no
    option to bind it elsewhere (README, Security): that one port of mpiexec, inherited by its
    proxies and ranks, is the only listener off loopback; no rank listens on any other."""
    outside = off_loopback(seen)
    control = outside.get("mpiexec", set())
    assert len(control) == 1 and next(iter(control))[0] == "0.0.0.0", seen
    assert all(pairs <= control for pairs in outside.values()), seen
    assert any(ip == "127.0.0.1" for ip, _ in seen.get("python", set())), seen  # the ranks' own


def test_the_job_runners_starts_keeps_the_ranks_on_loopback():
    done, seen = listening_while(["exec", *PI, "--backend", "mpi", "--workers", "2"])
    assert done.returncode == 0, done.stderr
    assert_only_hydras_control_port_is_off_loopback(seen)


def test_under_the_users_mpiexec_on_one_host_the_ranks_stay_on_loopback():
    done, seen = listening_while(["exec", *PI, "--backend", "mpi"], launcher=[MPIEXEC, "-n", "2"])
    assert done.returncode == 0, done.stderr
    assert_only_hydras_control_port_is_off_loopback(seen)


def test_a_network_device_the_user_chose_is_left_as_it_is():
    # the other direction: the ranks listen where the user's UCX_NET_DEVICES says, LAN included
    lan = [a.address for nic, addrs in psutil.net_if_addrs().items() if nic != "lo" for a in addrs
           if a.family == 2 and not ipaddress.ip_address(a.address).is_loopback]
    if not lan:
        pytest.skip("this machine has no network device but loopback")
    done, seen = listening_while(["exec", *PI, "--backend", "mpi", "--workers", "2"],
                                 env={"UCX_NET_DEVICES": "all"})
    assert done.returncode == 0, done.stderr
    assert {ip for ip, _ in seen.get("python", set())} & set(lan), seen


# -- leaks: a job's MPICH segments go with it, however it ends ---------------------------------------

def assert_swept(witness, tag: str) -> None:
    """The run's MPICH segments, and the topology files of its hydra proxies, are gone soon after it."""
    mine = {f"/dev/shm/{name}" for name in witness.segments_of(tag)}
    assert mine, "no rank of this run was seen mapping an MPICH segment"
    topology = witness.topology_files_of(tag)
    assert topology, "no hydra proxy of this run was seen holding its topology file"
    deadline = time.monotonic() + SWEPT_WITHIN
    while (left := {p for p in mine | topology if os.path.exists(p)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"this run's files outlived it by {SWEPT_WITHIN} s: {left}"


# The ranks die a second or so into the run: long enough for the Witness to see their segments.
ITEMS = """
    import os, signal, time

    def kill_on_worker(item):
        if os.environ.get("PMI_RANK", "0") != "0" and item >= 16:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.1)
        return item

    def abort_on_worker(item):
        if os.environ.get("PMI_RANK", "0") != "0" and item >= 16:
            from mpi4py import MPI
            MPI.COMM_WORLD.Abort(3)
        time.sleep(0.1)
        return item

    def hold(item):
        open(os.path.join(os.path.dirname(__file__), f"started-{item}"), "w").close()
        time.sleep(60)
        return item
"""


@pytest.fixture
def items(tmp_path: Path) -> Path:
    path = tmp_path / f"mpiitems_{uuid.uuid4().hex[:8]}.py"
    path.write_text(textwrap.dedent(ITEMS))
    return path


@pytest.mark.parametrize("fn", ["kill_on_worker", "abort_on_worker"])
def test_a_rank_killed_or_aborting_under_mpiexec_leaves_no_segment(fn, items, no_leftovers):
    done = run_cli("exec", f"{items}:{fn}", "--backend", "mpi", "--chunksize", "1", "--set", "n=40",
                   launcher=[MPIEXEC, "-n", "3"], timeout=120)
    assert done.returncode != 0
    assert_swept(no_leftovers, done.tag)


def test_a_rank_killed_in_a_job_runners_started_leaves_no_segment(items, no_leftovers):
    done = run_cli("exec", f"{items}:kill_on_worker", "--backend", "mpi", "--workers", "2",
                   "--chunksize", "1", "--set", "n=40", "--retries", "0", timeout=120)
    assert done.returncode == 1, done.stderr
    assert_swept(no_leftovers, done.tag)


def start_held(items: Path, launcher: list[str], *extra: str) -> tuple[subprocess.Popen, str]:
    tag = uuid.uuid4().hex
    proc = subprocess.Popen([*launcher, sys.executable, "-m", "runners", "exec", f"{items}:hold",
                             "--backend", "mpi", "--chunksize", "1", "--set", "n=4", *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "RUNNERS_TEST_TAG": tag})
    deadline = time.monotonic() + 120
    while not list(items.parent.glob("started-*")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    return proc, tag


def assert_nothing_left(tag: str, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while (left := tagged_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, [p.cmdline() for p in left]


@pytest.mark.parametrize("form", ["spawned", "mpiexec"])
def test_the_runner_or_mpiexec_sigkilled_leaves_no_rank_and_no_segment(form, items, no_leftovers):
    launcher = [MPIEXEC, "-n", "2"] if form == "mpiexec" else []
    extra = ("--workers", "2") if form == "spawned" else ()
    proc, tag = start_held(items, launcher, *extra)
    try:
        no_leftovers.sample()  # the segments of this run's ranks, seen now
        proc.kill()  # the runner itself, or the user's mpiexec
        proc.communicate(timeout=30)
        assert_nothing_left(tag)
        assert_swept(no_leftovers, tag)
        runners.sweep_scratch()  # the killed runner's own folder: the next run's to sweep (README)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# -- signals under the user's mpiexec ----------------------------------------------------------------

@pytest.mark.parametrize("scheme", ["spmd", "master-worker"])
@pytest.mark.parametrize(("sig", "code", "said"), [(signal.SIGTERM, 143, "terminated: "),
                                                   (signal.SIGINT, 130, "interrupted: ")],
                         ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_users_mpiexec_exits_with_its_code_quickly_in_one_line(scheme, sig, code, said,
                                                                                 items):
    # mpiexec forwards the signal to every rank: rank 0 ends the job, the others stop their items
    proc, tag = start_held(items, [MPIEXEC, "-n", "2"], "--set", f"backend.scheme={scheme}")
    began = time.monotonic()
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    elapsed = time.monotonic() - began
    assert proc.returncode == code, err
    assert elapsed < 3 + 2, elapsed  # 3 s, and the margin a loaded machine needs
    # hydra's own notes on Ctrl-C ("[mpiexec@host] Sending Ctrl-C ...", on stdout) are mpiexec's
    assert all(line.startswith("[mpiexec@") for line in out.splitlines()), out
    ours = err.splitlines()
    assert len(ours) == 1 and ours[0].startswith(said), err
    assert_nothing_left(tag)
