"""The fault matrix (issue 7) for joblib, dask, ray, serial, threads and asyncio, and Ctrl-C in a batch.

tests/test_faults.py covers multiprocessing and futures. Every case here runs `runners` in a real
subprocess with a hard timeout and faulthandler, so a hang fails the test; run_cli (or
assert_nothing_left) fails it if any process of the run survives, raylets and dask workers included.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

import runners
from tests.conftest import ROOT, run_cli, tagged_processes
from tests.test_ray import cluster  # noqa: F401 - the two-node Ray cluster fixture, reused

FAULTHANDLER = {"PYTHONFAULTHANDLER": "1", "RAY_USAGE_STATS_ENABLED": "0"}
# Seconds a back-end may take to start and stop in a subprocess, on a busy 2-core machine: the
# bounds below are this plus what the case itself allows.
STARTUP = {"joblib": 10, "dask": 20, "ray": 40}
REMOTE = [pytest.param(name, marks=pytest.mark.skipif(not runners.backend_status(name)[0],
                                                      reason=f"{name} is not installed"))
          for name in ("joblib", "dask", "ray")]


def exec_args(backend: str, function: str, *extra: str) -> list[str]:
    return ["exec", f"runners.testing:{function}", "--backend", backend, "--workers", "2", *extra]


def processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            line = " ".join(proc.info["cmdline"] or [])
            if text in line and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(f"{proc.pid} {line[:160]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.fixture
def fault_env():
    """The environment of a case: faulthandler on, and a temp root of its own for a private Ray.

    run_cli finds a run's processes by a tag in their environment, but Ray's daemons rewrite theirs;
    every raylet, gcs_server and agent names its session folder on its command line, so after the
    case none may mention this root. (Other test modules may run Ray at the same time: a check by
    process name would see theirs.)"""
    root = Path(f"/tmp/rf-{uuid.uuid4().hex[:8]}")  # short: Ray's socket paths must fit 107 bytes
    root.mkdir()
    yield {**FAULTHANDLER, "RAY_TMPDIR": str(root)}
    deadline = time.monotonic() + 15
    while (left := processes_mentioning(str(root))) and time.monotonic() < deadline:
        time.sleep(0.3)
    shutil.rmtree(root, ignore_errors=True)
    assert not left, left


# -- joblib (loky), dask (LocalCluster), ray (private instance) ------------------------------------

@pytest.mark.parametrize("backend", REMOTE)
def test_sigkilled_worker_is_lost_not_a_hang(backend, fault_env):
    began = time.monotonic()
    done = run_cli(*exec_args(backend, "kill_self_on", "--set", "n=8", "--retries", "0"),
                   timeout=120, env=fault_env)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "was lost" in done.stderr and "held items" in done.stderr
    assert done.stderr.split("held items", 1)[1].strip()  # it names the items it lost
    assert "Traceback" not in done.stderr
    assert time.monotonic() - began < STARTUP[backend] + 5


@pytest.mark.parametrize("backend", REMOTE)
def test_lost_worker_is_retried_and_the_answer_is_right(backend, tmp_path, fault_env):
    marker = tmp_path / "crashed-once"
    items = json.dumps([[i, str(marker) if i == 4 else ""] for i in range(10)])
    done = run_cli(*exec_args(backend, "crash_once", "--set", f"items={items}", "--retries", "2", "--json"),
                   timeout=120, env=fault_env)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["result"] == list(range(10))
    assert marker.exists()  # the worker really died once
    assert sum(record["attempts"].values()) >= 1  # and some batch took a second attempt


@pytest.mark.parametrize("backend", REMOTE)
@pytest.mark.parametrize("function", ["segfault_on_three", "quiet_exit_on_three"])
def test_segfault_and_quiet_exit_are_crashes_never_success(backend, function, fault_env):
    done = run_cli(*exec_args(backend, function, "--set", "n=6", "--retries", "0", "--json"),
                   timeout=120, env=fault_env)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "was lost" in done.stderr, done.stderr
    assert not done.stdout.strip()  # no result record printed


# How long stopping takes after the first item fails, with every worker busy in a 30-s item and
# 38 more queued: each back-end below cancels running items too (loky terminates its workers,
# dask closes the cluster, ray cancels with force), so this is start-up plus a few seconds.
FAIL_FAST_AFTER_STARTUP = {"joblib": 10, "dask": 15, "ray": 15}


@pytest.mark.parametrize("backend", REMOTE)
def test_fail_fast_stops_long_running_items_quickly(backend, fault_env):
    items = json.dumps([[i, 0.0 if i == 0 else 30.0] for i in range(40)])
    began = time.monotonic()
    done = run_cli(*exec_args(backend, "raise_or_sleep", "--set", f"items={items}", "--chunksize", "1"),
                   timeout=120, env=fault_env)
    elapsed = time.monotonic() - began
    assert done.returncode == 1 and "item 0 refuses" in done.stderr, done.stderr
    assert elapsed < STARTUP[backend] + FAIL_FAST_AFTER_STARTUP[backend], elapsed


# -- in-process back-ends: serial, threads, asyncio ------------------------------------------------

ITEMS = '''
import asyncio
import os
import time

from runners import testing
from dataclasses import replace


class Escape(BaseException):
    """Not an Exception: a bare `except Exception` in a runner would let it through."""


def raise_base(item):
    if item == 2:
        raise Escape(f"item {item} escapes")
    return item


def wait_while(item):
    """Say it started (a file in `started`), then wait while `flag` exists."""
    started, flag, index = item
    open(os.path.join(started, str(index)), "w").close()
    while os.path.exists(flag):
        time.sleep(0.05)
    return index


async def exit_async(item):
    return testing.exit_in_item(item)


async def raise_base_async(item):
    return raise_base(item)


async def wait_while_async(item):
    started, flag, index = item
    open(os.path.join(started, str(index)), "w").close()
    while os.path.exists(flag):
        await asyncio.sleep(0.05)
    return index


# The same functions as tasks with an async twin, for the asyncio back-end.
EXIT = replace(testing.map_task(testing.exit_in_item), run_async=exit_async)
RAISE_BASE = replace(testing.map_task(raise_base), run_async=raise_base_async)
WAIT = replace(testing.map_task(wait_while), run_async=wait_while_async)
'''
LOCAL = ["serial", "threads", "asyncio"]


@pytest.fixture
def items_file(tmp_path: Path) -> Path:
    path = tmp_path / f"faultitems_{uuid.uuid4().hex[:8]}.py"  # a fresh module name per test
    path.write_text(ITEMS)
    return path


@pytest.mark.parametrize("backend", LOCAL)
@pytest.mark.parametrize(("task", "kind", "index"), [("EXIT", "SystemExit", 3), ("RAISE_BASE", "Escape", 2)])
def test_system_exit_and_base_exception_in_an_item_are_task_failures(backend, task, kind, index, items_file):
    done = run_cli("exec", f"{items_file}:{task}", "--backend", backend, "--workers", "2",
                   "--set", "items=[0, 1, 2, 3, 4, 5]", "--chunksize", "1", timeout=60, env=FAULTHANDLER)
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)  # not SystemExit's 3, not 0
    assert kind in done.stderr and f"item {index}" in done.stderr, done.stderr
    assert not done.stdout.strip()


def start_runner(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    tag = f"faults-more-{uuid.uuid4().hex}"
    proc = subprocess.Popen([sys.executable, "-m", "runners", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **FAULTHANDLER, **(env or {}), "RUNNERS_TEST_TAG": tag})
    return proc, tag


def wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate(timeout=30)
            raise AssertionError(f"{what} never happened (exit {proc.returncode}): {out} {err}")
        time.sleep(0.05)


def assert_nothing_left(tag: str, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while tagged_processes(tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not tagged_processes(tag), [p.cmdline() for p in tagged_processes(tag)]


def interrupt(proc: subprocess.Popen) -> tuple[str, float]:
    """SIGINT the runner as a terminal's Ctrl-C would; its stderr and how long it took to exit."""
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=30)
        raise
    return err, time.monotonic() - began


@pytest.mark.parametrize("backend", LOCAL)
def test_ctrl_c_exits_130_quickly_and_cleanly(backend, items_file, tmp_path):
    started, flag = tmp_path / "started", tmp_path / "hold"
    started.mkdir()
    flag.touch()  # items wait while it exists: long-running until the test says otherwise
    items = json.dumps([[str(started), str(flag), i] for i in range(8)])
    proc, tag = start_runner("exec", f"{items_file}:WAIT", "--backend", backend, "--workers", "2",
                             "--chunksize", "1", "--set", f"items={items}")
    try:
        wait_for(lambda: any(started.iterdir()), proc, "an item start")
        if backend == "threads":
            # A thread cannot be stopped: Ctrl-C cancels what is queued and waits for the running
            # items. Let them end a moment after the signal to show that exit waits for no more.
            err, elapsed = _interrupt_then_release(proc, flag)
        else:
            err, elapsed = interrupt(proc)
    finally:
        flag.unlink(missing_ok=True)
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err, err
    assert elapsed < 5, elapsed
    assert len(list(started.iterdir())) < 8  # pending items were cancelled, not run
    assert_nothing_left(tag)


def _interrupt_then_release(proc: subprocess.Popen, flag: Path) -> tuple[str, float]:
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)
    assert proc.poll() is None, "the threads back-end cannot stop a running item, yet it exited"
    flag.unlink()
    _, err = proc.communicate(timeout=60)
    return err, time.monotonic() - began


# -- Ctrl-C during `runners batch` -----------------------------------------------------------------

BATCH = """
name: interrupted
repeats: 2
experiments:
  - name: quick
    task: iowait
    params: {{n: 4, seconds: 0}}
    backends: [serial]
  - name: slow
    task: "{items}:wait_while"
    params: {{items: {items_list}}}
    backends: [multiprocessing]
    workers: [2]
"""


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_ctrl_c_in_a_batch_keeps_finished_records_and_a_rerun_completes_them(items_file, tmp_path):
    started, flag, out = tmp_path / "started", tmp_path / "hold", tmp_path / "out"
    started.mkdir()
    flag.touch()
    items_list = json.dumps([[str(started), str(flag), i] for i in range(4)])
    config = tmp_path / "batch.yaml"
    config.write_text(BATCH.format(items=items_file, items_list=items_list))
    proc, tag = start_runner("batch", str(config), "--out", str(out), "--no-report")
    try:
        wait_for(lambda: any(started.iterdir()), proc, "the slow cell's start")
        err, elapsed = interrupt(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert elapsed < 5, elapsed
    assert "Traceback" not in err, err
    assert_nothing_left(tag)
    kept = records(out)
    assert [r["experiment"] for r in kept] == ["quick", "quick"]  # the finished cell's two repeats

    flag.unlink()  # the slow items now finish at once
    done = run_cli("batch", str(config), "--out", str(out), "--no-report", timeout=120)
    assert done.returncode == 0, done.stderr
    final = records(out)
    assert len(final) == 4 and len({(r["cell"], r["repeat"]) for r in final}) == 4
    assert final[:2] == kept  # the kept records are untouched
    assert [r["result"] for r in final[2:]] == [[0, 1, 2, 3]] * 2


# -- Ray: a node of a two-node cluster killed mid-job (issue 7, item 17) ---------------------------


def node_raylet(address: str) -> psutil.Process:
    """The raylet of the cluster's second node (started with a temp dir named rr-node-...)."""
    port = address.rsplit(":", 1)[1]
    for proc in psutil.process_iter(["name", "cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if "raylet" in (proc.info["name"] or "") and "/rr-node-" in line and f":{port}" in line:
            return proc
    raise AssertionError(f"no raylet of a second node of the cluster at {address}")


@pytest.mark.skipif(not runners.backend_status("ray")[0], reason="ray is not installed")
def test_killed_ray_node_mid_job_has_its_items_rerun_on_the_surviving_node(cluster, items_file, tmp_path):  # noqa: F811
    address, env = cluster
    started, flag = tmp_path / "started", tmp_path / "hold"
    started.mkdir()
    flag.touch()
    items = json.dumps([[str(started), str(flag), i] for i in range(6)])
    proc, tag = start_runner("exec", f"{items_file}:wait_while", "--backend", "ray", "--workers", "2",
                             "--chunksize", "1", "--retries", "2", "--set", f"items={items}",
                             "--set", f"backend.address={address}", "--json", env=env)
    try:
        # one CPU per node and one per item: two items started means each node runs one
        wait_for(lambda: len(list(started.iterdir())) >= 2, proc, "an item on each node", timeout=180)
        raylet = node_raylet(address)
        doomed = [raylet, *raylet.children(recursive=True)]
        for victim in doomed:
            victim.kill()
        psutil.wait_procs(doomed, timeout=10)
        flag.unlink()  # the head's item, and every rerun, now ends at once
        out, err = proc.communicate(timeout=180)
    finally:
        flag.unlink(missing_ok=True)
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    record = json.loads(out)
    assert record["result"] == list(range(6))
    assert sum(record["attempts"].values()) >= 1, record["attempts"]  # the lost item ran again
    assert_nothing_left(tag)
