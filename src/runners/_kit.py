"""The conformance kit: the cases every back-end must pass, as a class a plugin's own tests subclass.

    class TestMine(runners.testing.BackendSuite):
        backend = "mine"

Most cases run on one started back-end shared by the class (`run_on`), as a batch of experiments does;
a case gets a fresh start only where starting, the worker count or a worker's death is what it tests.
The guarantees a back-end declares on its class (`lost_items`, `names_signal`, `stops_running_items`,
`items_by_value`, `pickles_items`, `separate_processes`) are checked both ways: a back-end that does
more than it declares fails too, so the declaration stays the truth the fault matrix relies on.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
import traceback
from typing import Any, ClassVar

import psutil
import pytest

from . import testing
from ._backend import Backend
from ._engine import DEFAULT_SEED, Job, plan, run, run_on
from ._errors import FailedItems, NotPicklable, TaskError, WorkerLost
from ._executor import Executor
from ._registry import load_backend, load_task

SMALL = {  # quick, with an independent truth: each task's check, and the serial back-end's result
    "pi": {"samples": 200_000, "item_samples": 20_000},
    "primes": {"start": 1_000, "stop": 6_000},
    "factorize": {"numbers": [2, 97, 360, 1_000_003 * 97, 2**31 - 1, 600_851_475_143]},
    "sumsq": {"n": 12_345, "parts": 7},
    "tiny": {"n": 1_000},
    "iowait": {"n": 6, "seconds": 0.01},
}
LONG_ITEM = 30.0  # seconds an item beside a failing one runs: stopping it and shutting down take far less
SHORT_ITEM = 3.0  # the same where a back-end declares that it waits for running items


def _live_children() -> list[psutil.Process]:
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            # multiprocessing's helpers live as long as the interpreter, not as a back-end
            helper = any(h in " ".join(child.cmdline()) for h in ("resource_tracker", "forkserver"))
            if child.status() != psutil.STATUS_ZOMBIE and not helper:
                alive.append(child)
        except psutil.NoSuchProcess:
            continue
    return alive


class BackendSuite:
    """Subclass it in a test module and set `backend` to the registered name; pytest collects the rest."""

    backend: ClassVar[str] = ""
    workers: ClassVar[int] = 2

    # -- Fixtures -----------------------------------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def backend_class(cls) -> type[Backend]:
        return load_backend(cls.backend)

    @pytest.fixture(scope="class")
    @classmethod
    def started(cls, backend_class: type[Backend]):
        """One started back-end for every case that allows sharing it; when they are done, it must
        leave no process behind (the cases' own checks leave its workers to this one)."""
        before = {p.pid for p in _live_children()}
        any_task = "iowait" if backend_class.runs_coroutines else "tiny"  # the plan checks the pair
        with plan(Job(any_task, backend=cls.backend, workers=cls.workers)).make_backend() as started:
            yield started
        deadline = time.monotonic() + 15
        while (left := [p for p in _live_children() if p.pid not in before]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not left, f"the shared {cls.backend} back-end left processes: {[p.cmdline() for p in left]}"

    @pytest.fixture(scope="class")
    @classmethod
    def serial_results(cls) -> dict[str, Any]:
        return {name: run(name, params=params).result for name, params in SMALL.items()}

    def run_shared(self, started: Backend, task: Any, **job: Any):
        """Run `task` on the shared back-end, as a batch of experiments would."""
        self.skip_unless_runnable(started, task)
        return run_on(started, plan(Job(task, backend=self.backend, workers=self.workers, **job)))

    def skip_unless_runnable(self, backend: Backend | type[Backend], task: Any) -> None:
        if backend.runs_coroutines and load_task(task).run_async is None:
            pytest.skip(f"the {self.backend} back-end runs only tasks with an async function")

    # -- Each on a fresh start: what is tested is starting, the worker count, or a worker's death ---

    def test_shutdown_is_safe_before_start_and_after_a_failed_start(self, backend_class):
        backend_class(None, 1).shutdown()  # never started: nothing to stop, no AttributeError

        class FailsAfterStarting(backend_class):  # type: ignore[misc, valid-type]
            def start(self) -> None:
                super().start()
                raise OSError("start failed half-way")

        backend = FailsAfterStarting(None, self.workers)
        with pytest.raises(OSError, match="half-way"), backend:
            pass
        backend.shutdown()  # again: each cleanup runs once

    def test_worker_count_changes_no_result(self, backend_class, serial_results):
        self.skip_unless_runnable(backend_class, "pi")
        the_plan = plan(Job("pi", backend=self.backend, workers=3, params=SMALL["pi"]))
        with the_plan.make_backend() as backend:
            assert run_on(backend, the_plan).result == serial_results["pi"]
            fewer_items = plan(Job("tiny", backend=self.backend, workers=3, params={"n": 2}))
            assert run_on(backend, fewer_items).result == 3

    def test_a_function_that_does_not_pickle_is_refused_before_any_worker_starts(self, backend_class):
        from ._task import Task

        task = Task("lam", testing.EchoParams, lambda p, s: p.items, lambda x: x,
                    lambda values, p: list(values))
        self.skip_unless_runnable(backend_class, task)
        if not backend_class.pickles_items:
            assert run(task, backend=self.backend, params={"items": [1]}).result == [1]
            return
        with pytest.raises(NotPicklable, match="module"):
            run(task, backend=self.backend, params={"items": [1]})

    def test_a_dead_worker_is_reported_as_declared(self, backend_class):
        """`lost_items` and `names_signal`: what a WorkerLost names when a worker is SIGKILLed."""
        if backend_class.lost_items is None:
            pytest.skip("items run in the driver's process: a dying item ends the run itself "
                        "(the fault matrix checks that in a subprocess)")
        task = testing.map_task(testing.kill_self_on)
        # Going on past failures, so that every batch the dead worker took is reported: with fail-fast
        # the first one reported may be another batch it held (dask queues several on a worker).
        with pytest.raises((WorkerLost, FailedItems)) as caught:
            run(task, backend=self.backend, workers=self.workers, chunksize=2, retries=0,  # a poison item
                fail_fast=False, params={"items": list(range(8))})
        errors = caught.value.errors if isinstance(caught.value, FailedItems) else [caught.value]
        assert errors and all(isinstance(e, WorkerLost) for e in errors), errors
        holder = next((e for e in errors if 3 in e.items), None)
        assert holder is not None, errors  # the items of the worker that item 3 killed are named
        if backend_class.lost_items == "exact":  # those it held, and no other
            assert holder.exact and set(holder.items) <= {2, 3} and len(errors) == 1, errors
        elif backend_class.lost_items == "batch":  # each batch it took, each named on its own
            assert all(e.exact and set(e.items) in ({0, 1}, {2, 3}, {4, 5}, {6, 7}) for e in errors), errors
        if backend_class.names_signal:
            assert "SIGKILL" in str(holder), holder

    def test_fail_fast_stops_running_items_only_where_declared(self, backend_class):
        """`stops_running_items`: an item's failure ends the run without waiting for the item running
        beside it (which sleeps far longer than any shut-down takes), or, declared not to, after it."""
        stops = backend_class.stops_running_items
        task = testing.map_task(testing.raise_soon_or_sleep)
        self.skip_unless_runnable(backend_class, task)
        sleep = LONG_ITEM if stops else SHORT_ITEM
        the_plan = plan(Job(task, backend=self.backend, workers=2, chunksize=1,
                            params={"items": [[0, 0.0], [1, sleep]]}))  # item 0 raises while 1 runs
        with the_plan.make_backend() as backend:  # the shut-down counts: it may wait for the items
            began = time.monotonic()
            with pytest.raises(TaskError):
                run_on(backend, the_plan)
        took = time.monotonic() - began
        if stops:
            assert took < LONG_ITEM - 5, f"waited {took:.1f} s, as for the running item"
        else:
            assert took >= SHORT_ITEM - 0.5, f"declared not to stop running items, but took {took:.1f} s"

    # -- On a shared back-end -----------------------------------------------------------------------

    @pytest.mark.parametrize("task", sorted(SMALL))
    def test_result_equals_serial_and_passes_check(self, started, serial_results, task):
        record = self.run_shared(started, task, params=SMALL[task])
        assert record.result == serial_results[task]
        assert record.check.ok, record.check
        the_task = load_task(task)
        assert record.items == len(list(the_task.split(the_task.params(**SMALL[task]), record.seed)))

    def test_results_come_back_in_item_order_when_items_finish_out_of_order(self, started):
        items = [[i, 0.02 * ((7 * i) % 5)] for i in range(20)]
        record = self.run_shared(started, testing.map_task(testing.sleep_then_echo), chunksize=1,
                                 params={"items": items})
        assert record.result == list(range(20))

    @pytest.mark.parametrize("n", [0, 1], ids=["empty", "one-item"])
    def test_edge_sizes(self, started, n):
        record = self.run_shared(started, "tiny", params={"n": n})
        assert record.result == n * (n + 1) // 2 and record.items == n

    def test_explicit_chunksize_is_honoured(self, started):
        record = self.run_shared(started, "tiny", chunksize=7, params={"n": 100})
        assert record.batches == 15 and record.result == 5050  # ceil(100 / 7) batches

    def test_another_seed_gives_another_pi(self, started, serial_results):
        assert self.run_shared(started, "pi", params=SMALL["pi"], seed=7).result != serial_results["pi"]

    def test_item_exception_keeps_type_message_traceback_and_item(self, started):
        with pytest.raises(TaskError) as caught:  # descending: item 7 is at index 12, told apart
            self.run_shared(started, testing.map_task(testing.raise_on_seven), chunksize=3,
                            params={"items": list(range(19, -1, -1))})
        error = caught.value
        assert isinstance(error.exception, ValueError) and str(error.exception) == "item 7 is unlucky"
        assert error.index == 12 and error.item == 7
        assert "raise_on_seven" in error.remote_traceback and "item 12 (7)" in str(error)

    def test_unpicklable_exception_still_reports_its_type_and_message(self, started):
        with pytest.raises(TaskError) as caught:
            self.run_shared(started, testing.map_task(testing.raise_unpicklable), params={"items": [5]})
        assert "Unpicklable" in f"{type(caught.value.exception).__name__} {caught.value.exception}"
        assert "cannot travel: 5" in str(caught.value)

    def test_system_exit_in_an_item_is_a_task_failure(self, started):
        with pytest.raises(TaskError) as caught:
            self.run_shared(started, testing.map_task(testing.exit_in_item), params={"items": list(range(6))})
        assert isinstance(caught.value.exception, SystemExit) and caught.value.index == 3

    def test_items_report_the_processes_that_ran_them(self, started):
        record = self.run_shared(started, testing.map_task(testing.whereami), chunksize=1,
                                 params={"items": list(range(8))})
        ran = {tuple(x) for x in record.result}
        assert sum(sum(p.values()) for p in record.placement.values()) == 8
        assert {pid for _, pid in ran} == {pid for p in record.placement.values() for pid in p}

    def test_a_result_travels_back_only_if_it_pickles(self, started):
        """Items in other processes: a result must pickle (one rule, whatever the transport); in the
        driver's process the very object comes back."""
        try:
            record = self.run_shared(started, testing.map_task(testing.return_open_file), chunksize=4,
                                     params={"items": [0, 1, 2, 3]})
        except TaskError as error:
            assert started.separate_processes, f"an in-process back-end refused a result: {error}"
            assert error.index == 0 and error.item == 0
            assert "cannot be pickled to send it back to the driver" in str(error)
            return
        for returned in record.result:
            with returned:  # the very object, never pickled
                assert returned.name == testing.__file__ and not returned.closed
        assert self.returns_any_result_in_the_driver(started), "a result that does not pickle came back"

    def returns_any_result_in_the_driver(self, started: Backend) -> bool:
        """Whether these few quick items ran in the driver's process (override where a back-end
        decides per run, as auto does)."""
        return not started.separate_processes

    def test_items_travel_by_value_only_where_declared(self, started):
        """`items_by_value`: an item that plain pickle refuses (a lambda) reaches the worker."""
        task = testing.map_task(testing.call_item)
        try:
            record = self.run_shared(started, task, params={"items": [lambda: 5]})
        except TaskError as error:
            assert started.pickles_items and not started.items_by_value, f"a lambda item failed: {error}"
            assert "cannot be pickled" in str(error) and error.index == 0
            return
        assert record.result == [5]
        # Only an item that left this process travelled at all (auto runs its first batches here,
        # and stays here for good on a run this small unless an earlier run made it hand over).
        ran_in = {pid for pids in record.placement.values() for pid in pids}
        assert started.items_by_value or not started.pickles_items or ran_in == {os.getpid()}, \
            "a lambda item went by value"

    # -- Through runners.Executor, on the same shared back-end ----------------------------------------

    def executor(self, started: Backend) -> Executor:
        if started.runs_coroutines:
            pytest.skip(f"the {self.backend} back-end runs coroutines: runners.Executor runs plain functions")
        return Executor(started)

    @pytest.mark.parametrize("task", sorted(SMALL))
    def test_executor_map_of_a_tasks_items_gives_the_serial_result(self, started, serial_results, task):
        the_task = load_task(task)
        params = the_task.params(**SMALL[task])
        with self.executor(started) as ex:
            result = the_task.combine(ex.map(the_task.run, the_task.split(params, DEFAULT_SEED)), params)
        assert result == serial_results[task]

    def test_executor_map_keeps_item_order_and_submit_each_call(self, started):
        items = [(i, 0.02 * ((7 * i) % 5)) for i in range(20)]
        with self.executor(started) as ex:
            assert list(ex.map(testing.sleep_then_echo, items, chunksize=1)) == list(range(20))
            futures = {ex.submit(testing.sleep_then_echo, item): item[0] for item in items[:8]}
            done = {futures[f]: f.result() for f in concurrent.futures.as_completed(futures, timeout=120)}
        assert done == {i: i for i in range(8)}

    def test_executor_raises_an_items_own_exception_with_the_workers_traceback(self, started):
        with self.executor(started) as ex:
            values = ex.map(testing.raise_on_seven, range(20), chunksize=3)
            assert [next(values) for _ in range(7)] == [2 * i for i in range(7)]
            with pytest.raises(ValueError, match="item 7 is unlucky"):
                next(values)
            failed = ex.submit(testing.raise_on_seven, 7).exception(timeout=120)
        assert isinstance(failed, ValueError)
        assert "raise_on_seven" in "".join(traceback.format_exception(failed))
