"""The fault matrix: each case in a real `runners exec` subprocess with a hard timeout, over the local
process back-ends and their start methods. A hang fails the test (subprocess timeout + faulthandler);
run_cli fails it if any process survives; the autouse fixture checks /dev/shm."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import psutil
import pytest

import runners
from runners import testing
from tests.conftest import ROOT, run_cli, tagged_processes

PROCESS_BACKENDS = [
    pytest.param(backend, method, id=f"{backend}-{method}")
    for backend in ("multiprocessing", "futures")
    for method in ("fork", "spawn", "forkserver")
]
FAULTHANDLER = {"PYTHONFAULTHANDLER": "1"}


def exec_args(backend, method, function, *extra):
    return ["exec", f"runners.testing:{function}", "--backend", backend,
            "--set", f"backend.start_method={method}", *extra]


@pytest.mark.parametrize(("backend", "method"), PROCESS_BACKENDS)
def test_sigkilled_worker_is_reported_with_signal_and_items_quickly(backend, method):
    began = time.monotonic()
    done = run_cli(*exec_args(backend, method, "kill_self_on", "--set", "n=8", "--retries", "0"),
                   timeout=60, env=FAULTHANDLER)
    assert done.returncode == 1, done.stderr
    assert "SIGKILL" in done.stderr and "was lost" in done.stderr
    held = done.stderr.split("held items", 1)[1]
    if backend == "multiprocessing":
        assert "3" in held  # the watcher knows which batch the dead worker ran
    else:
        assert held.strip()  # a broken executor loses every batch in flight: it names some of them
    assert time.monotonic() - began < 15  # includes interpreter and pool start-up
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("backend", "method"), PROCESS_BACKENDS)
def test_lost_worker_is_retried_on_a_fresh_one_and_the_answer_is_right(backend, method, tmp_path):
    marker = tmp_path / "crashed-once"
    items = json.dumps([[i, str(marker) if i == 4 else ""] for i in range(10)])
    done = run_cli(*exec_args(backend, method, "crash_once", "--set", f"items={items}", "--json"),
                   timeout=60, env=FAULTHANDLER)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["result"] == list(range(10))
    assert marker.exists()
    assert record["attempts"].get("2", 0) >= 1  # the crashed batch took a second attempt


@pytest.mark.parametrize(("backend", "method"), PROCESS_BACKENDS)
@pytest.mark.parametrize(("function", "how"), [("segfault_on_three", "SIGSEGV"),
                                               ("quiet_exit_on_three", "EXIT(0)")])
def test_crashes_name_how_the_worker_died_and_never_pass_as_success(backend, method, function, how):
    done = run_cli(*exec_args(backend, method, function, "--set", "n=6", "--retries", "0"),
                   timeout=60, env=FAULTHANDLER)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert how in done.stderr


@pytest.mark.parametrize(("backend", "method"), PROCESS_BACKENDS)
def test_poison_item_is_retried_then_fails_saying_how_often(backend, method):
    done = run_cli(*exec_args(backend, method, "kill_self_on", "--set", "n=6", "--retries", "2",
                              "--chunksize", "1"), timeout=90, env=FAULTHANDLER)
    assert done.returncode == 1
    assert "attempted 3 times" in done.stderr


def test_keep_going_finishes_the_other_items_and_reports_every_failure():
    done = run_cli("exec", "runners.testing:raise_on_seven", "--backend", "multiprocessing",
                   "--set", "items=[1, 7, 3, 7, 5]", "--chunksize", "1", "--keep-going")
    assert done.returncode == 1
    assert "2 of 5 batches failed" in done.stderr
    assert done.stderr.count("is unlucky") == 2


def test_fail_fast_cancels_long_pending_items_quickly():
    # 100 items of 10 s each behind one that fails at once: stopping must not wait for them.
    items = json.dumps([[i, 0.0 if i == 0 else 10.0] for i in range(100)])
    began = time.monotonic()
    done = run_cli("exec", "runners.testing:raise_or_sleep", "--backend", "futures", "--set",
                   f"items={items}", "--chunksize", "1", timeout=60)
    assert done.returncode == 1 and "refuses" in done.stderr
    assert time.monotonic() - began < 20


@pytest.mark.parametrize("backend", ["multiprocessing", "futures"])
def test_unpicklable_argument_names_the_item_and_its_type(backend):
    task = testing.map_task(testing.echo)
    with pytest.raises(runners.TaskError) as caught:
        runners.run(task, backend=backend, chunksize=5, params={"items": [1, 2, lambda: 0, 4]})
    assert caught.value.index == 2
    assert "function" in str(caught.value) and "cannot be pickled" in str(caught.value)


@pytest.mark.parametrize("backend", ["multiprocessing", "futures"])
def test_argument_that_fails_to_unpickle_in_the_worker_is_an_error_not_a_hang(backend):
    task = testing.map_task(testing.echo)
    with pytest.raises(runners.TaskError, match="refuses to be unpickled"):
        runners.run(task, backend=backend, params={"items": [testing.ExplodesOnLoad()]})


@pytest.mark.parametrize("backend", ["multiprocessing", "futures"])
def test_result_that_fails_to_pickle_is_an_error_with_the_childs_message(backend):
    with pytest.raises(runners.TaskError, match="(?i)pickle"):
        runners.run(testing.map_task(testing.return_unpicklable), backend=backend, params={"items": [1]})


@pytest.mark.parametrize("backend", ["multiprocessing", "futures"])
def test_crash_with_a_large_payload_in_flight_is_reported_quickly(backend):
    task = testing.map_task(testing.kill_self_with_big_payload)
    began = time.monotonic()
    with pytest.raises(runners.WorkerLost):
        runners.run(task, backend=backend, retries=0, chunksize=1,
                    params={"items": [[i, b"x" * 4_000_000] for i in range(4)]})
    assert time.monotonic() - began < 5 + 2  # plus pool start-up


def test_timeout_stops_and_replaces_the_worker_running_the_item():
    began = time.monotonic()
    with pytest.raises(runners.ItemTimeout) as caught:
        runners.run(testing.map_task(testing.sleep_seconds), backend="multiprocessing", timeout=1.0,
                    params={"items": [0.01, 30.0, 0.01]})
    assert caught.value.index == 1
    assert time.monotonic() - began < 10


def test_timeout_with_retry_on_reruns_then_reports_attempts():
    with pytest.raises(runners.ItemTimeout, match="attempted 2 times"):
        runners.run(testing.map_task(testing.sleep_seconds), backend="multiprocessing", timeout=0.5,
                    retries=1, retry_on=("ItemTimeout",), params={"items": [30.0]})


@pytest.mark.parametrize("backend", ["serial", "threads", "futures"])
def test_backends_that_cannot_stop_an_item_refuse_a_timeout_up_front(backend):
    with pytest.raises(runners.ConfigError, match="cannot stop a running item"):
        runners.run("tiny", backend=backend, timeout=1.0)


def start_runner(*args):
    tag = f"sig-{time.monotonic_ns()}"
    proc = subprocess.Popen([sys.executable, "-m", "runners", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**__import__("os").environ, "RUNNERS_TEST_TAG": tag})
    return proc, tag


def wait_for_workers(proc, count, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(psutil.Process(proc.pid).children(recursive=True)) >= count:
            return
        time.sleep(0.1)
    raise AssertionError("the workers never started")


def assert_nothing_left(tag, within=10):
    deadline = time.monotonic() + within
    while tagged_processes(tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not tagged_processes(tag), [p.cmdline() for p in tagged_processes(tag)]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("backend", ["multiprocessing", "futures"])
def test_ctrl_c_and_sigterm_exit_quickly_and_clean(backend, sig, code):
    proc, tag = start_runner("exec", "runners.testing:sleep_seconds", "--backend", backend,
                             "--workers", "2", "--set", "items=[30, 30, 30, 30]")
    wait_for_workers(proc, 2)
    time.sleep(0.5)
    began = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert time.monotonic() - began < 5
    assert "Traceback" not in err
    assert_nothing_left(tag)


@pytest.mark.parametrize(("backend", "method"), PROCESS_BACKENDS)
def test_workers_exit_on_their_own_when_the_runner_is_sigkilled(backend, method):
    proc, tag = start_runner("exec", "runners.testing:sleep_seconds", "--backend", backend,
                             "--set", f"backend.start_method={method}",
                             "--workers", "2", "--set", "items=[30, 30, 30, 30]")
    wait_for_workers(proc, 2)
    proc.kill()
    proc.communicate(timeout=10)
    assert_nothing_left(tag, within=10)


@pytest.mark.parametrize("backend", ["multiprocessing", "futures"])
def test_a_pool_inside_a_worker_is_refused_and_blas_is_capped(backend):
    refusal = runners.run(testing.map_task(testing.nested_pool), backend=backend, params={"items": [0]})
    assert "nested pools" in refusal.result[0]
    limits = runners.run(testing.map_task(testing.blas_threads), backend=backend, params={"items": [0]})
    assert limits.result[0]["omp"] == "1"
    assert all(n == 1 for n in limits.result[0]["pools"])
