"""The fault matrix (issue 7): every case over every installed back-end, and over the start methods
where a worker's death, the runner's death or a retry depends on them.

Each case is a real `python -m runners` subprocess with a hard timeout and faulthandler on, so a hang
fails the test instead of stalling CI; run_cli (or assert_nothing_left) fails it if any process of
the run survives, the fault_env fixture if any Ray daemon of its private temp root does, the autouse
fixture of conftest.py if a /dev/shm segment does.

What each back-end is expected to do comes from what its class declares (`lost_items`, `names_signal`,
`stops_running_items`, `items_by_value`, `startup_seconds`, `enforces_timeout`; runners.testing's kit
checks each declaration), not from tables kept here: where a back-end cannot honour a case, the test asserts
the documented behaviour instead. In-process back-ends (serial, threads, asyncio, and auto, which runs
quick items in the driver): an item that SIGKILLs, segfaults or `os._exit`s its process ends the
runner itself with that signal or code, printing no result, leaving nothing behind. Back-ends without
`enforces_timeout` refuse `--timeout` with exit 2. Every item function has an async twin, so asyncio
runs every case for real.

Not run for every back-end, and why:
- ray (a private instance costs 6-15 s to start here): only the cases where Ray's own machinery is
  what is tested: a worker killed, retried, segfaulted or exiting, fail-fast cancelling running items,
  Ctrl-C, run_timeout, the runner SIGKILLed, `--timeout` refused, and a node of a two-node cluster
  killed (retries on; a lost worker with retries off is the SIGKILL case). Item exceptions,
  BaseException, poison items, pickling and nested pools go through the engine's code that the other
  back-ends exercise, and tests/test_conformance.py runs item exceptions, SystemExit and lambdas on
  Ray through the Python API.
- an item's exception (SystemExit and BaseException too), keep-going: the CLI's report of them, once
  per way items run (serial, asyncio, multiprocessing; see ONE_PER_WAY_ITEMS_RUN); the kit and
  tests/test_progress.py run them on each back-end.
- pickling, a large payload, nested pools: back-ends whose items leave the runner's process; an
  in-process back-end never pickles an item (the cases would only show that it works).
- a retried per-item timeout: only back-ends that enforce timeouts (the others refuse `--timeout`).
- KNOWN_BUGS: (case, back-end) pairs that fail today because of a bug in the back-end; reported as
  xfail with the bug and not run (a hang would cost the subprocess timeout, a leak the next test).
- MPI under a user's own mpiexec: tests/test_mpi.py (how mpi is launched); here the mpi back-end
  starts its own mpiexec, as a plain `runners exec` does.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
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
from runners._signals import signals_end_the_run
from tests.conftest import ROOT, installed_backends, run_cli, tagged_processes
from tests.test_ray import cluster  # noqa: F401 - the two-node Ray cluster fixture, reused

BACKENDS = installed_backends()
START_METHODS = ("fork", "spawn", "forkserver")
FAULTHANDLER = {"PYTHONFAULTHANDLER": "1", "RAY_USAGE_STATS_ENABLED": "0"}


@dataclasses.dataclass(frozen=True)
class Expect:
    """What the README's back-end table says a back-end does; the cases assert exactly this."""

    in_runner: bool  # items run in the runner's own process: a crash there ends the runner itself
    timeout: bool  # stops and replaces a worker whose item outlives --timeout; else refuses it (exit 2)
    exact_items: bool  # a lost worker names only the dead worker's items
    # A worker's death fails every batch in flight (a broken executor, joblib's pool, the MPI job): the
    # error names all their items and says that the dead worker held some of them, not which.
    all_in_flight: bool
    signal_known: bool  # a lost worker's error names the signal (SIGKILL, SIGSEGV, EXIT(0))
    stops_running: bool  # fail-fast and Ctrl-C stop items already running (threads: cannot)
    cloudpickle: bool  # items travel by cloudpickle: a lambda as an item goes (results must pickle)
    startup: float  # seconds to start and stop it in a subprocess on a busy 2-core machine


def expect(backend: str) -> Expect:
    """What the back-end's class declares (runners.backend.Backend's guarantees, which the kit checks)."""
    cls = runners.load_backend(backend)
    return Expect(
        # auto runs items in the driver until parallel work pays; these cases' items never do
        in_runner=cls.lost_items is None or backend == "auto",
        timeout=cls.enforces_timeout,
        exact_items=cls.lost_items == "exact",
        all_in_flight=cls.lost_items == "in flight",
        signal_known=cls.names_signal,
        stops_running=cls.stops_running_items,
        cloudpickle=cls.items_by_value,
        startup=cls.startup_seconds,
    )


def has_start_method(backend: str) -> bool:
    return "start_method" in {f.name for f in dataclasses.fields(runners.load_backend(backend).Options)}


def matrix(*, methods: bool = False, skip: tuple[str, ...] = (), only=None, among=None) -> list:
    """(backend, start method) parameters: every installed back-end (or those `among`) but `skip`,
    those `only` keeps; with `methods`, each back-end that has a start method once per method."""
    rows = []
    for backend in BACKENDS:
        if backend in skip or (only is not None and not only(expect(backend))):
            continue
        if among is not None and backend not in among:
            continue
        if methods and has_start_method(backend):
            rows += [pytest.param(backend, m, id=f"{backend}-{m}") for m in START_METHODS]
        else:
            rows.append(pytest.param(backend, None, id=backend))
    return rows


HEAVY = ("ray",)  # see the module docstring

# Cases a back-end fails today because of a bug in it, found by this matrix: not run (a hang costs the
# full subprocess timeout, a leak fails the next test's checks), listed as xfail with the bug. Fix the
# back-end, then delete its line here.
KNOWN_BUGS: dict[tuple[str, str], str] = {}  # none today: every bug the matrix found is fixed


def known_bug(case: str, backend: str) -> None:
    if (case, backend) in KNOWN_BUGS:
        pytest.xfail(KNOWN_BUGS[case, backend])


ITEMS_LEAVE_RUNNER = {"only": lambda e: not e.in_runner}
# An item's own exception is carried back by each back-end's transport, and the kit checks that on every
# back-end through the Python API on one started back-end (runners.testing: type, message, traceback,
# index and item; keep-going on each back-end is tests/test_progress.py's, through the CLI). What the
# cases below add is how the CLI reports it, the same code whatever the back-end: once per way items
# run, in the runner (serial), as coroutines (asyncio: the kit runs only tasks with an async twin on it,
# so this is its one check) and in worker processes (multiprocessing).
ONE_PER_WAY_ITEMS_RUN = {"among": ("serial", "asyncio", "multiprocessing")}


# -- the items: every function of the matrix as a task with an async twin -------------------------

ITEMS = '''
import asyncio
import os
import time
from dataclasses import replace

from runners import testing


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


async def wait_while_async(item):
    started, flag, index = item
    open(os.path.join(started, str(index)), "w").close()
    while os.path.exists(flag):
        await asyncio.sleep(0.05)
    return index


async def raise_or_sleep_async(item):
    index, delay = item
    if delay == 0:
        raise RuntimeError(f"item {index} refuses")
    await asyncio.sleep(delay)
    return index


def kill_with_big_payload(item):
    """Note when it dies (a file beside this module), holding an argument bigger than a pipe buffer."""
    if item[0] == 1:
        with open(os.path.join(os.path.dirname(__file__), "died-at"), "w") as out:
            out.write(repr(time.time()))
    return testing.kill_self_with_big_payload(item)


def _unpicklable_items(params, seed):
    return [1, 2, lambda: 0, 4]


def _explodes_items(params, seed):
    return [testing.ExplodesOnLoad()]


def _big_items(params, seed):
    return [[i, b"x" * 4_000_000] for i in range(4)]


def task(fn, run_async=None, split=None):
    """`fn` as a task, with an async twin for the asyncio back-end (by default fn, called in the loop)."""
    async def twin(item):
        return fn(item)

    made = replace(testing.map_task(fn), run_async=run_async or twin)
    return replace(made, split=split) if split else made


RAISE_ON_SEVEN = task(testing.raise_on_seven)
RAISE_BASE = task(raise_base)
EXIT = task(testing.exit_in_item)
KILL = task(testing.kill_self_on)
CRASH_ONCE = task(testing.crash_once)
SEGFAULT = task(testing.segfault_on_three)
QUIET_EXIT = task(testing.quiet_exit_on_three)
RAISE_OR_SLEEP = task(testing.raise_or_sleep, raise_or_sleep_async)
WAIT = task(wait_while, wait_while_async)
SLEEP = task(testing.sleep_seconds)
UNPICKLABLE_ITEM = task(testing.echo, split=_unpicklable_items)
EXPLODES_ON_LOAD = task(testing.echo, split=_explodes_items)
UNPICKLABLE_RESULT = task(testing.return_unpicklable)
BIG_PAYLOAD = task(kill_with_big_payload, split=_big_items)
NESTED_POOL = task(testing.nested_pool)
BLAS = task(testing.blas_threads)
'''


@pytest.fixture
def items(tmp_path: Path) -> Path:
    """The items module, under a fresh name per test (process workers import it by name)."""
    folder = tmp_path / "items"
    folder.mkdir()
    path = folder / f"faultitems_{uuid.uuid4().hex[:8]}.py"
    path.write_text(ITEMS)
    return path


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


def exec_args(items: Path, task: str, backend: str, method: str | None, *extra: str) -> list[str]:
    method_set = ["--set", f"backend.start_method={method}"] if method else []
    return ["exec", f"{items}:{task}", "--backend", backend, "--workers", "2", *method_set, *extra]


def assert_runner_died(done: subprocess.CompletedProcess, code: int) -> None:
    """An in-process back-end: the item's crash ended the runner itself, which printed no result."""
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert not done.stdout.strip(), done.stdout


def assert_lost(done: subprocess.CompletedProcess, backend: str, how: str) -> str:
    """A lost-worker error, exit 1, no result, no traceback of ours; returns the items it names: those
    the dead worker held ("held items 3"), or, where the back-end cannot tell which of the batches in
    flight it held, all of them, saying so ("held one or more of items 3, 4, 5")."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "was lost" in done.stderr, done.stderr
    if done.stdout.strip():  # with --json: the error object alone (issue 13), no result
        failure = json.loads(done.stdout)
        assert failure["error"]["type"] == "WorkerLost" and "result" not in failure, done.stdout
    if expect(backend).signal_known:
        assert how in done.stderr, done.stderr
    said = "held one or more of items" if expect(backend).all_in_flight else "held items"
    if expect(backend).all_in_flight and re.search(r"held items \d+$", done.stderr, re.M):
        said = "held items"  # one item in flight: then it is known which
    assert said in done.stderr, done.stderr
    held = done.stderr.split(said, 1)[1]
    assert held.strip()  # it names the items it lost
    return held


def named_items(held: str) -> list[int]:
    """The items a lost-worker error names: "3, 4, 5", or "1..7 (7 items)" for a longer span."""
    text = held.splitlines()[0].split("(")[0]
    if ".." in text:
        first, last = (int(n) for n in text.split(".."))
        return list(range(first, last + 1))
    return [int(n) for n in re.findall(r"\d+", text)]


# -- 1. an item raises -----------------------------------------------------------------------------

@pytest.mark.parametrize(("backend", "method"), matrix(**ONE_PER_WAY_ITEMS_RUN))
def test_item_error_keeps_type_traceback_and_item(backend, method, items, fault_env):
    done = run_cli(*exec_args(items, "RAISE_ON_SEVEN", backend, method, "--set", "items=[1, 7, 3]"),
                   timeout=120, env=fault_env)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "item 1 (7) raised ValueError: item 7 is unlucky" in done.stderr, done.stderr
    assert 'raise ValueError(f"item {item} is unlucky")' in done.stderr  # the worker's traceback
    assert not done.stdout.strip()


@pytest.mark.parametrize(("backend", "method"), matrix(**ONE_PER_WAY_ITEMS_RUN))
def test_keep_going_finishes_the_other_items_and_reports_every_failure(backend, method, items, fault_env):
    done = run_cli(*exec_args(items, "RAISE_ON_SEVEN", backend, method, "--set", "items=[1, 7, 3, 7, 5]",
                              "--chunksize", "1", "--keep-going"), timeout=120, env=fault_env)
    assert done.returncode == 1
    assert "2 of 5 batches failed" in done.stderr, done.stderr
    assert done.stderr.count("is unlucky") >= 2
    assert "item 1 (7)" in done.stderr and "item 3 (7)" in done.stderr


# How long stopping may take after the first item fails, beyond start-up, with every worker busy in a
# long item and the rest queued: back-ends that stop running items (loky terminates its workers, dask
# closes the cluster, ray cancels with force, the process pools are terminated) need a few seconds.
FAIL_FAST_AFTER_STARTUP = {"dask": 15, "ray": 15}  # others: 10
LONG = 30.0  # seconds each pending item would take: a run that waited for one would blow the bound
SHORT = 3.0  # for back-ends that cannot stop a running item: it must be waited for, the rest not


@pytest.mark.parametrize(("backend", "method"), matrix())
def test_fail_fast_cancels_long_pending_items_quickly(backend, method, items, fault_env):
    known_bug("fail_fast", backend)
    stops = expect(backend).stops_running
    delay = LONG if stops else SHORT
    listed = json.dumps([[i, 0.0 if i == 0 else delay] for i in range(100)])
    began = time.monotonic()
    done = run_cli(*exec_args(items, "RAISE_OR_SLEEP", backend, method, "--set", f"items={listed}",
                              "--chunksize", "1"), timeout=180, env=fault_env)
    elapsed = time.monotonic() - began
    assert done.returncode == 1 and "item 0 refuses" in done.stderr, done.stderr
    bound = expect(backend).startup + FAIL_FAST_AFTER_STARTUP.get(backend, 10)
    assert elapsed < bound, elapsed
    if not stops:  # threads: the running items end first (README), the 98 queued ones never start
        assert elapsed >= SHORT, elapsed


# -- 2. SystemExit or a custom BaseException in an item --------------------------------------------

# Every back-end runs items through the core's run_batch / run_pickled_batch, whose `except BaseException`
# makes any exception an item's failure, and the kit checks SystemExit on each (test_system_exit_in_an_
# item_is_a_task_failure); asyncio awaits items in a loop of its own, kept here with the two others.
@pytest.mark.parametrize(("backend", "method"), matrix(**ONE_PER_WAY_ITEMS_RUN))
@pytest.mark.parametrize(("task", "kind", "index"), [("EXIT", "SystemExit", 3), ("RAISE_BASE", "Escape", 2)])
def test_system_exit_and_base_exception_in_an_item_are_task_failures(backend, method, task, kind, index,
                                                                      items, fault_env):
    done = run_cli(*exec_args(items, task, backend, method, "--set", "items=[0, 1, 2, 3, 4, 5]",
                              "--chunksize", "1"), timeout=120, env=fault_env)
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)  # not SystemExit's 3, not 0
    assert kind in done.stderr and f"item {index}" in done.stderr, done.stderr
    assert not done.stdout.strip()


# -- 3-6. a worker SIGKILLed, retried, segfaulting, exiting quietly, a poison item -------------------

@pytest.mark.parametrize(("backend", "method"), matrix(methods=True))
def test_sigkilled_worker_is_reported_with_signal_and_items_quickly(backend, method, items, fault_env):
    began = time.monotonic()
    done = run_cli(*exec_args(items, "KILL", backend, method, "--set", "n=8", "--retries", "0"),
                   timeout=120, env=fault_env)
    if expect(backend).in_runner:
        assert_runner_died(done, -signal.SIGKILL)
        return
    held = assert_lost(done, backend, "SIGKILL")
    named = named_items(held)
    if expect(backend).exact_items:
        assert 3 in named  # the watcher knows which batch the dead worker ran
    elif expect(backend).all_in_flight:
        assert 3 in named, held  # among the items it says the dead worker may have held
    assert "Traceback" not in done.stderr
    assert time.monotonic() - began < expect(backend).startup + 5  # includes start-up


@pytest.mark.parametrize(("backend", "method"), matrix(methods=True))
def test_lost_worker_is_retried_on_a_fresh_one_and_the_answer_is_right(backend, method, items, tmp_path,
                                                                         fault_env):
    marker = tmp_path / "crashed-once"
    listed = json.dumps([[i, str(marker) if i == 4 else ""] for i in range(10)])
    done = run_cli(*exec_args(items, "CRASH_ONCE", backend, method, "--set", f"items={listed}", "--json"),
                   timeout=120, env=fault_env)  # retries: the default, 2
    assert marker.exists()  # the worker really died once
    if expect(backend).in_runner:
        assert_runner_died(done, -signal.SIGKILL)
        return
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)  # stdout holds the record alone
    assert record["result"] == list(range(10))
    assert sum(record["attempts"].values()) >= 1  # some batch took a second attempt
    # One line on stderr says so; none of the libraries' own reports (hydra's banner, Ray's raylet).
    assert record["lost_workers"] == 1, record
    assert re.fullmatch(r"1 worker lost, (its batch|\d+ batches) retried\n", done.stderr), done.stderr
    # Each item counted once, where it ran: a batch lost with its worker ran nowhere that can be named.
    assert "" not in record["nodes"] and sum(record["nodes"].values()) == 10, record["nodes"]
    if expect(backend).exact_items:
        assert record["attempts"].get("2", 0) >= 1  # exactly the crashed batch did


@pytest.mark.parametrize(("backend", "method"), matrix(methods=True))
@pytest.mark.parametrize(("task", "how", "code"), [("SEGFAULT", "SIGSEGV", -signal.SIGSEGV),
                                                    ("QUIET_EXIT", "EXIT(0)", 0)])
def test_crashes_name_how_the_worker_died_and_never_pass_as_success(backend, method, task, how, code,
                                                                     items, fault_env):
    known_bug(task, backend)
    done = run_cli(*exec_args(items, task, backend, method, "--set", "n=6", "--retries", "0", "--json"),
                   timeout=120, env=fault_env)
    if expect(backend).in_runner:
        # the runner's own process ended: a segfault with SIGSEGV (faulthandler's dump on stderr),
        # os._exit(0) with exit 0 and no result printed: a caller must not read exit 0 alone
        assert_runner_died(done, code)
        return
    assert_lost(done, backend, how)


@pytest.mark.parametrize(("backend", "method"), matrix(methods=True, skip=HEAVY))
def test_poison_item_is_retried_then_fails_saying_how_often(backend, method, items, fault_env):
    done = run_cli(*exec_args(items, "KILL", backend, method, "--set", "n=6", "--retries", "2",
                              "--chunksize", "1"), timeout=120, env=fault_env)
    if expect(backend).in_runner:
        assert_runner_died(done, -signal.SIGKILL)  # no second attempt: the runner is gone
        return
    assert done.returncode == 1
    assert "attempted 3 times" in done.stderr, done.stderr


# -- 7-9. pickling, a crash with a large payload in flight -----------------------------------------

@pytest.mark.parametrize(("backend", "method"), matrix(skip=HEAVY, **ITEMS_LEAVE_RUNNER))
def test_unpicklable_argument_names_the_item_and_its_type(backend, method, items, fault_env):
    known_bug("unpicklable_item", backend)
    done = run_cli(*exec_args(items, "UNPICKLABLE_ITEM", backend, method, "--chunksize", "4", "--json"),
                   timeout=120, env=fault_env)
    assert done.returncode == 1, (done.stdout, done.stderr)
    if expect(backend).cloudpickle:  # a lambda item travels by value, but comes back as a result
        assert "item 2 (<function" in done.stderr and "its result (function) cannot be pickled" in done.stderr
        return
    assert "item 2 (function) cannot be pickled" in done.stderr, done.stderr


@pytest.mark.parametrize(("backend", "method"), matrix(skip=HEAVY, **ITEMS_LEAVE_RUNNER))
def test_argument_that_fails_to_unpickle_in_the_worker_is_an_error_not_a_hang(backend, method, items,
                                                                              fault_env):
    known_bug("explodes_on_load", backend)
    done = run_cli(*exec_args(items, "EXPLODES_ON_LOAD", backend, method), timeout=120, env=fault_env)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "refuses to be unpickled" in done.stderr, done.stderr


@pytest.mark.parametrize(("backend", "method"), matrix(skip=HEAVY, **ITEMS_LEAVE_RUNNER))
def test_result_that_fails_to_pickle_is_an_error_with_the_childs_message(backend, method, items, fault_env):
    done = run_cli(*exec_args(items, "UNPICKLABLE_RESULT", backend, method, "--set", "items=[1]", "--json"),
                   timeout=120, env=fault_env)
    # one rule for results on every back-end, cloudpickling ones included (README, Failures)
    assert done.returncode == 1, (done.stdout, done.stderr)
    failure = json.loads(done.stdout)  # --json: the error object alone (issue 13), no result
    assert failure["error"]["type"] == "TaskError" and "result" not in failure, done.stdout
    assert failure["error"]["items"] == [0], done.stdout
    assert "item 0 (1) raised RuntimeError: its result (function) cannot be pickled" in done.stderr
    assert done.stderr.count("Traceback") == 1, done.stderr  # the worker's, printed once: no stdlib one


@pytest.mark.parametrize(("backend", "method"), matrix(skip=HEAVY, **ITEMS_LEAVE_RUNNER))
def test_crash_with_a_large_payload_in_flight_is_reported_quickly(backend, method, items, fault_env):
    done = run_cli(*exec_args(items, "BIG_PAYLOAD", backend, method, "--retries", "0", "--chunksize", "1"),
                   timeout=120, env=fault_env)
    ended = time.time()
    assert_lost(done, backend, "SIGKILL")
    died = float((items.parent / "died-at").read_text())
    assert ended - died < 5  # from the worker's death to the runner's exit


# -- 10. per-item timeout --------------------------------------------------------------------------

@pytest.mark.parametrize(("backend", "method"), matrix())
def test_timeout_stops_and_replaces_the_worker_or_is_refused_up_front(backend, method, items, fault_env):
    began = time.monotonic()
    done = run_cli(*exec_args(items, "SLEEP", backend, method, "--set", "items=[0.01, 30.0, 0.01]",
                              "--timeout", "1.0"), timeout=120, env=fault_env)
    if not expect(backend).timeout:
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert "cannot stop a running item" in done.stderr, done.stderr
        return
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "item 1 ran longer than its limit of 1 s; its worker was stopped" in done.stderr, done.stderr
    assert time.monotonic() - began < 10


@pytest.mark.parametrize(("backend", "method"), matrix(only=lambda e: e.timeout))
def test_timeout_with_retry_on_reruns_then_reports_attempts(backend, method, items, tmp_path, fault_env):
    job = tmp_path / "job.yaml"
    job.write_text(f"task: '{items}:SLEEP'\nbackend: {backend}\ntimeout: 0.5\nretries: 1\n"
                   "retry_on: [ItemTimeout]\nparams: {items: [30.0]}\n")
    done = run_cli("exec", "--config", str(job), timeout=120, env=fault_env)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "attempted 2 times" in done.stderr, done.stderr


# -- 11-13. Ctrl-C, SIGTERM, the runner SIGKILLed ---------------------------------------------------

def start_runner(*args: str, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    tag = f"faults-{uuid.uuid4().hex}"
    proc = subprocess.Popen([sys.executable, "-m", "runners", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **FAULTHANDLER, **env, "RUNNERS_TEST_TAG": tag})
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


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.communicate(timeout=30)


def held_items(tmp_path: Path, count: int) -> tuple[Path, Path, str]:
    """Items that each say they started and then wait while a flag file exists."""
    started, flag = tmp_path / "started", tmp_path / "hold"
    started.mkdir()
    flag.touch()
    return started, flag, json.dumps([[str(started), str(flag), i] for i in range(count)])


def stop_a_held_run(backend: str, method: str | None, items: Path, tmp_path: Path, env: dict[str, str],
                    *extra: str, interrupt=None, waits_for: float,
                    hang_after: float) -> tuple[int, str, float, int, str]:
    """Start a run of 8 items that wait on a flag, `interrupt(proc)` once one runs (or let `extra`
    stop it), and return (exit code, stderr, seconds from then to exit, items started, run tag).

    A back-end that cannot stop a running item (threads) must still be running `waits_for` seconds
    later; the flag is then dropped so its items end, to show that exit waits for nothing more."""
    started, flag, listed = held_items(tmp_path, 8)
    proc, tag = start_runner(*exec_args(items, "WAIT", backend, method, "--chunksize", "1", *extra,
                                        "--set", f"items={listed}"), env=env)
    try:
        wait_for(lambda: any(started.iterdir()), proc, "an item start", timeout=120)
        began = time.monotonic()
        if interrupt is not None:
            interrupt(proc)
        if not expect(backend).stops_running:
            time.sleep(waits_for)
            assert proc.poll() is None, f"{backend} cannot stop a running item, yet it exited"
            flag.unlink()
        _, err = proc.communicate(timeout=hang_after)
        elapsed = time.monotonic() - began
    finally:
        flag.unlink(missing_ok=True)
        stop(proc)
    return proc.returncode, err, elapsed, len(list(started.iterdir())), tag


@pytest.mark.parametrize(("backend", "method"), matrix())
@pytest.mark.parametrize(("sig", "code", "said"), [(signal.SIGINT, 130, "interrupted"),
                                                   (signal.SIGTERM, 143, "terminated")],
                         ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_and_sigterm_exit_quickly_and_clean(backend, method, sig, code, said, items, tmp_path,
                                                   fault_env):
    # threads: the signal cancels what is queued and the run waits for the running items
    returncode, err, elapsed, started, tag = stop_a_held_run(
        backend, method, items, tmp_path, fault_env, interrupt=lambda proc: proc.send_signal(sig),
        waits_for=1.0, hang_after=60)
    assert returncode == code, err
    assert said in err, err
    assert "Traceback" not in err, err
    # Before the 10-s unwind watchdog (a shut-down that needed it failed): typically 1-3 s, but two
    # copies of the suite at once took dask's past 5 s.
    assert elapsed < signals_end_the_run.UNWIND_SECONDS, elapsed
    assert started < 8  # pending items were cancelled, not run
    assert_nothing_left(tag)


@pytest.mark.parametrize(("backend", "method"), matrix())
def test_run_timeout_stops_the_whole_run_and_says_what_finished(backend, method, items, tmp_path, fault_env):
    limit = 2.0
    # threads: past the limit the run waits for its running items
    returncode, err, elapsed, started, tag = stop_a_held_run(
        backend, method, items, tmp_path, fault_env, "--run-timeout", str(limit), waits_for=limit + 2,
        hang_after=120)
    assert returncode == 1, err
    assert f"longer than its limit of {limit:g} s (run_timeout)" in err, err
    assert "of 8 items finished" in err and "Traceback" not in err, err
    assert elapsed < limit + expect(backend).startup, elapsed  # the limit, then shut-down
    assert started < 8  # pending items were cancelled, not run
    assert_nothing_left(tag)


@pytest.mark.parametrize(("backend", "method"), matrix(methods=True))
def test_workers_exit_on_their_own_when_the_runner_is_sigkilled(backend, method, items, tmp_path, fault_env):
    known_bug("runner_killed", backend)
    started, flag, listed = held_items(tmp_path, 4)
    proc, tag = start_runner(*exec_args(items, "WAIT", backend, method, "--chunksize", "1",
                                        "--set", f"items={listed}"), env=fault_env)
    try:
        wait_for(lambda: any(started.iterdir()), proc, "an item start", timeout=120)
        proc.kill()
        proc.communicate(timeout=10)
        assert_nothing_left(tag, within=10)  # fault_env then checks Ray's daemons
    finally:
        flag.unlink(missing_ok=True)
        stop(proc)
    assert_killed_runners_folders_are_swept()


def assert_killed_runners_folders_are_swept() -> None:
    """A SIGKILLed runner cannot remove its temporary folders: the next run's sweep does (runners'
    own, named after their dead creator). multiprocessing's own `pymp-*` folder (the forkserver's
    socket) is Python's to remove at a clean exit; it is all that may remain, and is removed here."""
    runners.sweep_scratch()
    temp = Path(os.environ["TMPDIR"])
    left = sorted(p.name for p in temp.iterdir())
    assert all(name.startswith("pymp-") for name in left), left
    for name in left:
        shutil.rmtree(temp / name, ignore_errors=True)


# -- 16. a pool inside a worker --------------------------------------------------------------------

@pytest.mark.parametrize(("backend", "method"), matrix(skip=HEAVY, **ITEMS_LEAVE_RUNNER))
def test_a_pool_inside_a_worker_is_refused_and_blas_is_capped(backend, method, items, fault_env):
    known_bug("nested_pool", backend)
    refusal = run_cli(*exec_args(items, "NESTED_POOL", backend, method, "--set", "items=[0]", "--json"),
                      timeout=120, env=fault_env)
    assert refusal.returncode == 0, refusal.stderr
    assert "nested pools" in json.loads(refusal.stdout)["result"][0]
    limits = run_cli(*exec_args(items, "BLAS", backend, method, "--set", "items=[0]", "--json"),
                     timeout=120, env=fault_env)
    assert limits.returncode == 0, limits.stderr
    found = json.loads(limits.stdout)["result"][0]
    assert found["omp"] == "1"
    assert all(n == 1 for n in found["pools"])


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


def test_ctrl_c_in_a_batch_keeps_finished_records_and_a_rerun_completes_them(items, tmp_path):
    started, flag, listed = held_items(tmp_path, 4)
    out = tmp_path / "out"
    config = tmp_path / "batch.yaml"
    config.write_text(BATCH.format(items=items, items_list=listed))
    proc, tag = start_runner("batch", str(config), "--out", str(out), "--no-report", env={})
    try:
        wait_for(lambda: any(started.iterdir()), proc, "the slow cell's start")
        began = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - began
    finally:
        stop(proc)
    assert proc.returncode == 130, err
    assert elapsed < 5, elapsed
    assert "Traceback" not in err, err
    assert_nothing_left(tag)
    kept = records(out)
    assert [r["experiment"] for r in kept] == ["quick", "quick"]  # the finished cell's two repeats

    flag.unlink()  # the slow items now finish at once
    done = run_cli("batch", str(config), "--out", str(out), "--no-report", timeout=120, env=FAULTHANDLER)
    assert done.returncode == 0, done.stderr
    final = records(out)
    assert len(final) == 4 and len({(r["cell"], r["repeat"]) for r in final}) == 4
    assert final[:2] == kept  # the kept records are untouched
    assert [r["result"] for r in final[2:]] == [[0, 1, 2, 3]] * 2


# -- 17. Ray: a node of a two-node cluster killed mid-job, retries on and off ----------------------

def node_raylet(address: str) -> psutil.Process:
    """The raylet of the cluster's second node (started with a temp dir named rr-node-...)."""
    port = address.rsplit(":", 1)[1]
    for proc in psutil.process_iter(["name", "cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if "raylet" in (proc.info["name"] or "") and "/rr-node-" in line and f":{port}" in line:
            return proc
    raise AssertionError(f"no raylet of a second node of the cluster at {address}")


@pytest.mark.skipif("ray" not in BACKENDS, reason="ray is not installed")
# One case only: it kills a node of the module's two-node cluster, which a second case would then lack
# (a lost-worker error with retries off is in the ray rows of the SIGKILL and crash cases above).
def test_killed_ray_node_mid_job_has_its_items_rerun_on_the_surviving_node(cluster, items, tmp_path):  # noqa: F811
    retries = 2
    address, env = cluster
    started, flag, listed = held_items(tmp_path, 6)
    proc, tag = start_runner("exec", f"{items}:wait_while", "--backend", "ray", "--workers", "2",
                             "--chunksize", "1", "--retries", str(retries), "--set", f"items={listed}",
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
        stop(proc)
    assert_nothing_left(tag)
    assert proc.returncode == 0, err
    record = json.loads(out)
    assert record["result"] == list(range(6))
    assert record["attempts"].get("2", 0) >= 1, record["attempts"]  # the lost node's item ran again
