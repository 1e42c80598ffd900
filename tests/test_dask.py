"""The dask back-end on real processes: a `dask scheduler` with two `dask worker`s, and a LocalCluster."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal
import socket
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
from runners import testing
from tests.conftest import ROOT, run_cli, tagged_processes

pytest.importorskip("distributed")
DASK = str(Path(sys.executable).with_name("dask"))
PI = {"samples": 1_200_000, "item_samples": 50_000}  # 24 items


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_workers(address: str, count: int, timeout: float = 60) -> None:
    from distributed import Client

    with Client(address, timeout=timeout, set_as_default=False) as client:
        client.wait_for_workers(count, timeout=timeout)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two single-thread workers on 127.0.0.1, each in its own process group, their
    scratch space in a folder of the test's (dask's default, TMPDIR/dask-scratch-space, outlives them)."""
    port, tag = free_port(), uuid.uuid4().hex
    scratch = str(tmp_path_factory.mktemp("dask-workers"))
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "RUNNERS_TEST_TAG": tag, "PYTHONPATH": str(ROOT),
           "DASK_TEMPORARY_DIRECTORY": scratch}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True,
             "env": env, "cwd": ROOT}
    commands = [[DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]]
    commands += [[DASK, "worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--nworkers", "1",
                  "--no-dashboard"]] * 2
    started = []
    try:
        for command in commands:
            started.append(subprocess.Popen(command, **quiet))
        wait_for_workers(address, 2)
        yield address
    finally:
        for proc in started:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in started:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        deadline = time.monotonic() + 15
        while (left := tagged_processes(tag)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"dask processes survived: {[p.cmdline() for p in left]}"


def test_pi_on_a_scheduler_with_two_workers_equals_serial_and_uses_both(cluster):
    serial = runners.run("pi", params=PI).result
    done = run_cli("exec", "pi", "--backend", "dask", "--set", f"backend.address={cluster}", "--chunksize",
                   "1", "--set", f"samples={PI['samples']}", "--set", f"item_samples={PI['item_samples']}",
                   "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["result"] == serial
    assert record["workers"] == 2  # the cluster's threads, not this machine's CPUs
    nodes = record["nodes"]
    assert len(nodes) == 2 and all(n.startswith("tcp://127.0.0.1:") for n in nodes), nodes
    assert all(count > 0 for count in nodes.values()) and sum(nodes.values()) == 24


def test_a_task_in_a_loose_file_reaches_the_cluster_workers_with_the_file_and_package_it_imports(cluster,
                                                                                                 tmp_path):
    tag = uuid.uuid4().hex[:8]  # the workers outlive this test: names they have not imported yet
    (tmp_path / f"power_{tag}.py").write_text("EXPONENT = 3\n")
    (tmp_path / f"offset_{tag}").mkdir()
    (tmp_path / f"offset_{tag}" / "__init__.py").write_text("OFFSET = 1\n")
    module = tmp_path / f"loose_{tag}.py"
    module.write_text(f"import offset_{tag}, power_{tag}\n"
                      f"def cube(x):\n    return x ** power_{tag}.EXPONENT + offset_{tag}.OFFSET\n")
    done = run_cli("exec", f"{module}:cube", "--backend", "dask", "--set", f"backend.address={cluster}",
                   "--set", "n=5", "--json", cwd=tmp_path.parent)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == [1, 2, 9, 28, 65]


def test_a_worker_address_is_not_taken_for_the_scheduler(cluster):
    from distributed import Client

    with Client(cluster, set_as_default=False) as client:
        worker = next(iter(client.scheduler_info()["workers"]))
    began = time.monotonic()
    done = run_cli("exec", "tiny", "--backend", "dask", "--set", f"backend.address={worker}", timeout=60)
    assert time.monotonic() - began < 5 + 15  # connect_timeout, then start-up on a loaded machine
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"Error: dask: backend.address {worker!r} is answered by a dask Worker, not a dask scheduler; "
        "expected the address `dask scheduler` prints (tcp://HOST:8786 by default; 8787 is its dashboard)"]


def test_an_address_that_does_not_answer_fails_fast_naming_it():
    address = f"tcp://127.0.0.1:{free_port()}"
    began = time.monotonic()
    done = run_cli("exec", "tiny", "--backend", "dask", "--set", f"backend.address={address}", timeout=60)
    assert time.monotonic() - began < 15
    assert done.returncode == 1
    assert address in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(("setting", "needles"), [
    ("backend.colour=red", ["unknown key 'colour'", "address", "connect_timeout", "in_flight"]),
    ("backend.address=not an address", ["backend.address", "tcp://"]),
])
def test_bad_options_are_usage_errors_listing_what_is_allowed(setting, needles):
    done = run_cli("exec", "tiny", "--backend", "dask", "--set", setting)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    for needle in needles:
        assert needle in done.stderr


def die_on_three(item: int) -> int:
    if item == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05)
    return item


def test_a_killed_worker_is_reported_as_worker_lost_with_its_items():
    with pytest.raises(runners.WorkerLost) as caught:
        # One batch in flight per worker and no retries: only the batch holding item 3 can be lost with its
        # worker (with more queued, Dask fails every batch the dead worker held, in any order).
        runners.run(testing.map_task(die_on_three), backend="dask", workers=2, chunksize=2, retries=0,
                    options={"in_flight": 2}, params={"items": list(range(8))})
    assert caught.value.backend == "dask"
    assert caught.value.items == [2, 3]
    assert re.search(r"dask worker tcp://127.0.0.1:\d+ left the cluster", str(caught.value)), caught.value


def test_local_cluster_threads_mode_and_a_loose_file(tmp_path):
    module = tmp_path / "sidecar.py"
    module.write_text(textwrap.dedent("""
        import os
        def pid_plus(x):
            return x + 1, os.getpid()
    """))
    done = run_cli("exec", f"{module}:pid_plus", "--backend", "dask", "--workers", "2", "--set", "n=4",
                   "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert [v for v, _ in record["result"]] == [1, 2, 3, 4]
    threaded = runners.run("tiny", backend="dask", workers=2, options={"processes": False},
                           params={"n": 100})
    assert threaded.result == 5050
    assert all(set(pids) == {os.getpid()} for pids in threaded.placement.values())  # in this process


def lan_ipv4() -> str:
    """A non-loopback IPv4 address of this machine, or skip the test."""
    for nic in psutil.net_if_addrs().values():
        for addr in nic:
            if addr.family == socket.AF_INET and not ipaddress.ip_address(addr.address).is_loopback:
                return addr.address
    pytest.skip("this machine has no non-loopback IPv4 address to bind to")


def exec_watching_sockets(*args: str) -> tuple[subprocess.CompletedProcess, set[tuple[str, int]]]:
    """`runners ARGS` through run_cli, and every (ip, port) its processes listened on meanwhile, sampled
    from outside: the processes are found by a marker in their environment, which the workers inherit."""
    marker, seen, done_event = uuid.uuid4().hex, set(), threading.Event()

    def sample() -> None:
        while not done_event.is_set():
            for proc in psutil.process_iter():
                try:
                    if proc.environ().get("RUNNERS_BIND_MARKER") == marker:
                        seen.update((c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet")
                                    if c.status == psutil.CONN_LISTEN)
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        done = run_cli(*args, env={"RUNNERS_BIND_MARKER": marker}, timeout=120)
    finally:
        done_event.set()
        sampler.join(timeout=30)
    return done, seen


PI_ARGS = ("exec", "pi", "--backend", "dask", "--workers", "2", "--set", f"samples={PI['samples']}",
           "--set", f"item_samples={PI['item_samples']}", "--json")


def test_bind_puts_the_scheduler_and_workers_on_that_address_and_warns_once():
    ip = lan_ipv4()
    done, listened = exec_watching_sockets(*PI_ARGS, "--set", f"backend.bind={ip}")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == runners.run("pi", params=PI).result
    assert done.stderr.count("listens on") == 1 and "no authentication" in done.stderr, done.stderr
    scheduler = re.search(r"scheduler tcp://([0-9.]+):(\d+)", done.stderr)
    assert scheduler and scheduler.group(1) == ip, done.stderr
    assert (ip, int(scheduler.group(2))) in listened, listened
    # Scheduler and both workers on the chosen address; only the scheduler's HTTP server stays on loopback.
    assert len({port for host, port in listened if host == ip}) >= 3, listened
    assert {host for host, _ in listened} <= {ip, "127.0.0.1"}, listened
    still = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN
             and (c.laddr.ip, c.laddr.port) in listened]
    assert not still, f"still listening after the run: {still}"


def busy_worker_chores(seconds: float) -> tuple[int, int]:
    """Spin for `seconds` in a dask worker: the stack samples its profiler holds then (its recent
    window, which it empties every second: not a count to subtract), and the times its event loop was
    timed meanwhile (dask's tick, counted by `Server._tick_counter`)."""
    from distributed import get_worker

    worker = get_worker()
    ticks = worker._tick_counter
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return worker.profile_recent["count"], worker._tick_counter - ticks


@pytest.mark.parametrize("dashboard", [None, "127.0.0.1:0"])
def test_workers_do_the_dashboards_chores_only_when_a_dashboard_can_show_them(dashboard):
    # dask's workers sample their stacks every 10 ms, beside the items, for the dashboard's profile
    # page, and time their event loop every 20 ms for its metrics; without one, nobody sees those.
    options = {"dashboard": dashboard} if dashboard else {}
    samples, ticks = runners.run(testing.map_task(busy_worker_chores), backend="dask", workers=1,
                                 params={"items": [0.6]}, options=options).result[0]
    if dashboard:
        assert samples > 0 and ticks > 5, (samples, ticks)
    else:  # a tick a second
        assert samples == 0 and ticks <= 1, (samples, ticks)


def test_results_come_straight_from_the_workers_not_through_the_scheduler(monkeypatch):
    # Through the scheduler (dask's default outside a worker), each result crossed a second connection
    # and the scheduler's event loop, in the driver: tiny 1M's compute took 1.03-1.04x longer (paired).
    from distributed import Scheduler

    relayed: list[object] = []
    through_scheduler = Scheduler.gather

    async def counted(self, *args, **kwargs):
        relayed.append(kwargs.get("keys"))
        return await through_scheduler(self, *args, **kwargs)

    monkeypatch.setattr(Scheduler, "gather", counted)  # the LocalCluster's scheduler runs in this process
    record = runners.run("tiny", backend="dask", workers=2, chunksize=1000, params={"n": 8000})
    assert record.result == runners.run("tiny", params={"n": 8000}).result and record.batches == 8
    assert relayed == [], relayed


def test_by_default_everything_listens_on_loopback_only_and_nothing_is_said():
    done, listened = exec_watching_sockets(*PI_ARGS)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == runners.run("pi", params=PI).result
    assert listened and {host for host, _ in listened} == {"127.0.0.1"}, listened
    assert "listens on" not in done.stderr


@pytest.mark.parametrize(("settings", "needles"), [
    (["backend.bind=nonsense"], ["backend.bind", "'nonsense'", "not an IP address of this machine",
                                 "127.0.0.1", "0.0.0.0"]),
    (["backend.bind=198.51.100.77"], ["backend.bind", "'198.51.100.77'", "127.0.0.1"]),  # TEST-NET-2
    (["backend.bind=0.0.0.0", "backend.address=tcp://127.0.0.1:8786"],
     ["backend.bind='0.0.0.0' contradicts backend.address='tcp://127.0.0.1:8786'"]),
    (["backend.bind=0.0.0.0", "backend.processes=false"], ["backend.bind='0.0.0.0' needs processes=true"]),
])
def test_a_bind_that_is_not_an_address_here_or_contradicts_another_option_is_a_usage_error(settings, needles):
    here = {a.address for nic in psutil.net_if_addrs().values() for a in nic}
    if "198.51.100.77" in settings[0] and "198.51.100.77" in here:
        pytest.skip("198.51.100.77 is an address of this machine")
    done = run_cli("exec", "tiny", "--backend", "dask", *[x for s in settings for x in ("--set", s)])
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr


def slow_the_second_time(item: tuple[int, str]) -> int:
    value, marker = item
    if os.path.exists(marker):
        time.sleep(60)  # dask's own rerun of a lost result: kept from finishing while the test looks
    open(marker, "w").close()
    return value


def test_every_batch_one_death_takes_names_that_worker(tmp_path):
    # The run counts lost workers by the words of their errors. A dask worker that dies while it runs
    # one batch and holds the unfetched result of another loses them in two ways (KilledWorker, and a
    # future dask calls 'lost'); both must name the same worker, or one death counts twice (seen in CI).
    from runners_dask import DaskTasks

    from runners.backend import Batch, load_backend

    backend = load_backend("dask")(None, 1)
    backend.start()
    try:
        tasks = DaskTasks(backend._client, "t", True, backend._removals)
        held = Batch(0, slow_the_second_time, 0, [(0, str(tmp_path / "ran"))])
        running = Batch(1, testing.crash_once, 1, [(1, str(tmp_path / "crashed"))])
        first = tasks.submit(held)
        deadline = time.monotonic() + 30
        while first.status != "finished" and time.monotonic() < deadline:
            time.sleep(0.05)
        second = tasks.submit(running)  # its item kills the worker that holds the first's result
        while (first.status, second.status) != ("lost", "error") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (first.status, second.status) == ("lost", "error")
        lost = [tasks.outcome(first, held).error, tasks.outcome(second, running).error]
    finally:
        backend.shutdown()
    assert all(isinstance(error, runners.WorkerLost) for error in lost), lost
    assert lost[0].reason == lost[1].reason, lost
    assert re.fullmatch(r"dask worker tcp://127\.0\.0\.1:\d+ left the cluster .*", lost[0].reason), lost
