"""`runners.Executor`: the `concurrent.futures.Executor` interface over any back-end.

One started back-end and one dispatcher thread per executor. The dispatcher runs `Backend.run` over a
`_Queue`, which hands out work as the back-end has room: a retry first, then submitted calls (one
call to a batch, as `submit` promises each call its own fate), then batches of `map`'s items, cut by
the engine's `Batcher` (so a million tiny items cost a few hundred round trips, not a million). A
back-end that waits on handles (`in_flight`) polls the queue while results are in flight and keeps one
`run` for the executor's whole life; one that iterates (serial, joblib) gets a wave of what is queued
and a fresh `run` for the next. Outcomes go back to futures and to each map's ordered output under
the engine's failure policy (retries of lost batches, `retry_on`).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError, Future
from pathlib import Path
from typing import Any

from ._backend import Backend, Batch, BatchResult
from ._batcher import MAX_BATCH_BYTES, Batcher
from ._config import job_from_sources
from ._engine import DEFAULT_SEED, Job, check_chunksize, plan_backend
from ._errors import BackendUnavailable, ConfigError, RunnersError, TaskError
from ._ordered import InOrder, as_exception


def _call(call: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]) -> Any:
    """A submitted call, as one item: (fn, args, kwargs)."""
    fn, args, kwargs = call
    return fn(*args, **kwargs)


@dataclasses.dataclass(frozen=True)
class _Star:
    """`fn(*item)`: map's items are tuples of its iterables' elements. A class, so it pickles."""

    fn: Callable[..., Any]

    def __call__(self, args: tuple[Any, ...]) -> Any:
        return self.fn(*args)


class _Counted:
    """An iterator with a known length, so the Batcher can spread the last items over every worker
    without reading ahead."""

    def __init__(self, items: Iterator[Any], count: int) -> None:
        self._items, self._count = items, count

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Any]:
        return self._items


def _user_error(error: RunnersError) -> BaseException:
    """What a future or map raises for an item's failure: the item's own exception, as the stdlib
    raises it (its worker traceback is its cause); the runners error for anything else."""
    return error.exception if isinstance(error, TaskError) else error


class _Calls:
    """The submitted calls: each its own batch and future."""

    def __init__(self) -> None:
        self.queue: deque[tuple[Future, Batch]] = deque()

    def settle(self, future: Future, error: RunnersError | None, values: Any) -> None:
        if error is None:
            future.set_result(next(iter(values)))
        else:
            future.set_exception(_user_error(error))


class _MapRun:
    """One `map` call: its items cut into batches on demand, its values handed out in order."""

    def __init__(self, batcher: Batcher, wake: threading.Condition) -> None:
        self.batcher = batcher
        self.batches = iter(batcher)
        self.order = InOrder()
        self.ready: deque[list[Any] | BaseException] = deque()  # for the consumer, in order
        self.out = 0  # batches handed out and not yet settled
        self.exhausted = False  # no more batches to cut
        self.stopped = False  # failed, cancelled or abandoned: no more batches, results ignored
        self.failed: tuple[int, BaseException] | None = None  # (batch id, error) to raise after its values
        self.input_error: Exception | None = None  # what reading the input raised, raised after the rest
        self._wake = wake

    def cut(self) -> Batch | None:
        """The next batch of items (called with the executor's lock held), or None."""
        if self.stopped or self.exhausted:
            return None
        try:
            batch = next(self.batches, None)
        except Exception as exc:  # noqa: BLE001 - the caller's iterable raised: map raises it in turn,
            batch = None  # after the values of the items it gave before
            self.input_error = exc
        if batch is None:
            self.exhausted = True
            self._finish_if_done()
            return None
        self.out += 1
        return batch

    def settle(self, batch: Batch, result: BatchResult, error: RunnersError | None,
               round_trip: float) -> None:
        self.out -= 1
        if self.stopped:
            return
        self.batcher.observe(result, round_trip)
        self.order.finished(batch, result.values)  # a failed batch: the values before its failure
        if error is not None:
            self.failed = (batch.id, _user_error(error))
            self.order.end_at(batch)  # no value after the failure goes out
            self.exhausted = True  # later batches are cut no more; those in flight are not awaited
        try:
            self.ready.extend(self.order.release())
        except RunnersError as exc:  # a value that does not unpickle here
            self.stop(exc)
            return
        if self.failed is not None and self.order.next_id > self.failed[0]:
            self.stop(self.failed[1])
        self._finish_if_done()

    def stop(self, error: BaseException | None) -> None:
        """No more batches; the consumer raises `error` after the values it has (None: just ends)."""
        if not self.stopped:
            self.stopped = True
            if error is not None:
                self.ready.append(error)
            self.ready.append(StopIteration())
            self._wake.notify_all()

    def _finish_if_done(self) -> None:
        if self.exhausted and self.out == 0:
            self.stop(self.input_error)
        else:
            self._wake.notify_all()

    @property
    def has_work(self) -> bool:
        return not (self.stopped or self.exhausted)

    def values(self, deadline: float | None) -> Iterator[Any]:
        """The map's values in order, as they arrive; TimeoutError past `deadline` (monotonic)."""
        try:
            while True:
                with self._wake:
                    while not self.ready:
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            raise TimeoutError()
                        self._wake.wait(remaining)
                    chunk = self.ready.popleft()
                if isinstance(chunk, StopIteration):
                    return
                if isinstance(chunk, BaseException):
                    raise chunk
                chunk.reverse()
                while chunk:  # popped, so that nothing here keeps a value the consumer dropped
                    yield chunk.pop()
        finally:
            with self._wake:
                self.stop(None)  # the consumer stopped early (an error, a break): cut no more


class _Queue:
    """What the dispatcher hands the back-end: a `Feed` for `in_flight`, and an iterable of what is
    queued right now for back-ends that iterate. Thread-safe: joblib pulls from its own thread."""

    def __init__(self, executor: Executor) -> None:
        self._ex = executor

    @property
    def finished(self) -> bool:
        return self._ex._closed and not self._ex._has_work()

    def take(self, wait: float) -> Batch | None:
        ex = self._ex
        deadline = time.monotonic() + wait
        with ex._wake:
            while True:
                batch = ex._next_batch()
                if batch is not None or self.finished:
                    return batch
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                ex._wake.wait(remaining)

    def __iter__(self) -> Iterator[Batch]:
        while (batch := self.take(0.0)) is not None:
            yield batch


_exiting = False


def _on_exit(executor: weakref.ref[Executor]) -> Callable[[], None]:
    def finish() -> None:
        """Like the stdlib's executors: finish what was submitted, then stop, as the interpreter ends."""
        global _exiting
        _exiting = True
        if (alive := executor()) is not None:
            alive.shutdown(wait=True)

    return finish


def _register_exit(executor: Executor) -> None:
    """Shut `executor` down when the interpreter ends, before it joins its threads, and before the
    pools the back-end uses stop taking work: concurrent.futures registers its own hooks the same way,
    when it is imported, and these run newest first, so one registered now runs before them."""
    register = getattr(threading, "_register_atexit", None)  # CPython 3.9+, private but stable
    if register is None:  # pragma: no cover
        import atexit

        register = atexit.register
    register(_on_exit(weakref.ref(executor)))


class Executor(concurrent.futures.Executor):
    """`concurrent.futures.Executor` on any runners back-end:

        with runners.Executor("ray", workers=4) as ex:    # was: ProcessPoolExecutor(max_workers=4)
            results = list(ex.map(simulate, params))

    `backend`: a back-end's name (its options as keyword arguments, as `backend.*` in YAML) or a
    back-end already started (as `runners.run_on` takes one; the executor does not shut it down).
    `workers` (or the stdlib's `max_workers`): None for the CPUs this process may use.
    `retries`, `retry_on`, `timeout` (per item): the engine's failure policy, as in `runners exec`.
    `seed` is not passed to your function: use `runners.item_seed(ex.seed, i)` for random work, so
    that the same inputs give the same results on every back-end.

    Under a user's `mpiexec`, `Executor("mpi")` returns on rank 0 only: the other ranks serve batches
    inside it and leave (with rank 0's exit code) when rank 0's executor shuts down.
    """

    def __init__(self, backend: str | Backend = "serial", workers: int | None = None, *,
                 max_workers: int | None = None, chunksize: int | None = None, retries: int = 2,
                 retry_on: Iterable[str] = (), timeout: float | None = None, seed: int = DEFAULT_SEED,
                 **options: Any) -> None:
        if max_workers is not None:
            if workers is not None:
                raise ConfigError("give workers or max_workers (its stdlib name), not both", key="workers")
            if isinstance(max_workers, int) and max_workers <= 0:
                raise ConfigError(f"max_workers must be greater than 0, got {max_workers}", key="workers")
            workers = max_workers
        started = backend if isinstance(backend, Backend) else None
        name = started.name if started is not None else backend
        if started is not None and options:
            raise ConfigError("options go to a back-end by name; this one is started already", key="backend")
        job = Job(None, backend=name, options=options, workers=started.workers if started else workers,
                  chunksize=chunksize, seed=seed, retries=retries, retry_on=tuple(retry_on), timeout=timeout)
        self._setup(job, started)

    @classmethod
    def from_config(cls, config: str | Path | None = None, *, sets: Iterable[str] = (),
                    **flags: Any) -> Executor:
        """An executor from a `runners exec` YAML file, `--set` pairs (`"backend.address=..."`) and the
        environment (RUNNERS_BACKEND, RUNNERS_WORKERS), with the CLI's precedence and errors. The
        file's task and params, if any, are validated and left unused; so are fail_fast and run_timeout
        (the executor's time limits are `map(timeout=)` and `Future.result(timeout=)`)."""
        job = job_from_sources(config, sets=tuple(sets), task_required=False, **flags)
        executor = cls.__new__(cls)
        executor._setup(job, None)
        return executor

    def _setup(self, job: Job, started: Backend | None) -> None:
        backend_class, options, workers, policy = plan_backend(job)
        if backend_class.runs_coroutines:
            raise BackendUnavailable(
                f"back-end {job.backend!r} runs async functions; an Executor runs plain ones (from "
                "asyncio, use loop.run_in_executor with any other back-end)", key="backend")
        self.seed = job.seed
        self._chunksize = 1 if policy.timeout is not None else job.chunksize
        self._policy = dataclasses.replace(policy, fail_fast=True)
        self._wake = threading.Condition()
        self._calls = _Calls()
        self._maps: deque[_MapRun] = deque()
        # A batch waiting to run again: its owner (a Future or a _MapRun), the batch, attempts so far.
        self._retries: deque[tuple[Any, Batch, int]] = deque()
        # The batches with the back-end, by the id they were sent with: owner, batch, attempts, when sent.
        self._handed: dict[int, tuple[Any, Batch, int, float]] = {}
        self._ids = itertools.count()  # ids for batches as sent: unique across calls, maps and retries
        self._call_numbers = itertools.count()  # a call's number, which errors name as its item
        self._closed = False
        self._aborted = False  # stopped at once (Ctrl-C): running items were stopped, not awaited
        self._broken: BaseException | None = None
        self._owned = started is None
        self._backend = started if started is not None else backend_class(options, workers)
        if self._owned:
            try:
                self._backend.start()
            except BaseException:
                self._backend.shutdown()
                raise
        self._stopped = threading.Lock()  # taken by whoever shuts the back-end down, once
        self._queue = _Queue(self)
        self._thread = threading.Thread(target=self._dispatch, name=f"runners-executor-{self._backend.name}",
                                        daemon=True)  # joined by shutdown() and at interpreter exit
        _register_exit(self)
        self._thread.start()

    # -- The concurrent.futures interface ----------------------------------------------------------

    @property
    def backend(self) -> Backend:
        """The started back-end this executor runs on."""
        return self._backend

    @property
    def workers(self) -> int:
        return self._backend.workers

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        with self._wake:
            self._check_open()
            future: Future = Future()
            batch = Batch(-1, _call, next(self._call_numbers), [(fn, args, kwargs)], self._policy.timeout)
            self._calls.queue.append((future, batch))
            self._wake.notify_all()
            return future

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int | None = None) -> Iterator[Any]:
        """`fn` over the iterables, values in order, batched by measured cost (`chunksize` fixes the
        batch size). The items are read as the back-end has room, not all at once; `timeout` counts
        from this call, as in the stdlib."""
        deadline = None if timeout is None else time.monotonic() + timeout
        items: Iterable[Any]
        if len(iterables) == 1:  # the common case: items as given (a range or list slices cheaply)
            items, call = iterables[0], fn
            iter(items)  # not iterable: TypeError now, as map() raises it
        else:
            items, call = zip(*iterables, strict=False), _Star(fn)  # the shortest decides, as in map()
            try:
                items = _Counted(items, min(len(it) for it in iterables))  # type: ignore[arg-type]
            except (TypeError, ValueError):  # one has no length (a generator): the batcher reads on
                pass
        size = chunksize if chunksize is not None else self._chunksize
        if size is not None:
            check_chunksize(size)
        max_bytes = min(self._backend.max_batch_bytes or MAX_BATCH_BYTES, MAX_BATCH_BYTES)
        batcher = Batcher(items, call, self._backend.workers, size, self._policy.timeout, max_bytes,
                          rounds=self._backend.runs_in_rounds)
        with self._wake:
            self._check_open()
            run = _MapRun(batcher, self._wake)
            self._maps.append(run)
            self._wake.notify_all()
        return run.values(deadline)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._wake:
            if cancel_futures and not self._closed:
                # What was submitted to an idle executor has started, in spirit: let the dispatcher take
                # its first batch before the rest is cancelled, rather than let thread scheduling decide
                # whether anything runs (the stdlib's threads take work as they are made).
                self._wake.wait_for(lambda: self._handed or not self._calls.queue or self._broken, 1.0)
            self._closed = True
            if cancel_futures:
                for future, _ in self._calls.queue:
                    future.cancel()
                self._calls.queue.clear()
                for run in self._maps:
                    run.stop(CancelledError())
            self._wake.notify_all()
        if wait and not self._aborted:  # after an abort, the dispatcher may wait on work that died
            self._thread.join()
            self._stop_backend()  # the dispatcher does it too; whoever comes first

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> bool | None:
        if exc is not None and not isinstance(exc, Exception):  # Ctrl-C, SIGTERM: stop now, as exec does
            self._abort(exc)
            return None
        return super().__exit__(kind, exc, tb)

    # -- The dispatcher ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._broken is not None:
            name = self._backend.name
            raise concurrent.futures.BrokenExecutor(f"the {name} back-end failed: {self._broken}")
        if _exiting:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown")
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _has_work(self) -> bool:
        return bool(self._retries or self._calls.queue or any(run.has_work for run in self._maps))

    def _next_batch(self) -> Batch | None:
        """The next batch for the back-end, with the lock held; None when nothing is ready."""
        owner: Any
        while True:
            attempts = 0
            if self._retries:
                owner, batch, attempts = self._retries.popleft()
            elif self._calls.queue:
                owner, batch = self._calls.queue.popleft()
                if not owner.set_running_or_notify_cancel():
                    continue  # cancelled while it waited
            else:
                batch, owner = None, None
                for _ in range(len(self._maps)):
                    run = self._maps[0]
                    self._maps.rotate(-1)  # maps share the back-end in turn
                    if (batch := run.cut()) is not None:
                        owner = run
                        break
                while self._maps and not self._maps[0].has_work and self._maps[0].out == 0:
                    self._maps.popleft()
                if batch is None:
                    return None
            sent = dataclasses.replace(batch, id=next(self._ids))
            self._handed[sent.id] = (owner, batch, attempts, time.perf_counter())
            self._wake.notify_all()  # shutdown(cancel_futures=True) may be waiting for this
            return sent

    def _dispatch(self) -> None:
        try:
            while True:
                with self._wake:
                    while not self._has_work() and not self._closed:
                        self._wake.wait()
                    if not self._has_work():  # shut down, and all sent work has come back
                        return
                results = self._backend.run(self._queue)  # type: ignore[arg-type]
                try:
                    for result in results:
                        with self._wake:
                            self._settle(result)
                        del result  # hold no value between results (the stdlib tests check it)
                finally:
                    close = getattr(results, "close", None)
                    if close is not None:
                        close()
                with self._wake:
                    if self._handed:  # a run ends with every batch it took answered: else they are lost
                        raise RunnersError(f"the {self._backend.name} back-end returned no result for "
                                           f"{len(self._handed)} batch(es); they were lost")
        except BaseException as exc:  # noqa: BLE001 - the back-end itself failed: nothing more can run
            with self._wake:
                self._broken = exc
                self._fail_everything(exc)
        finally:
            if self._owned:
                self._stop_backend()

    def _settle(self, result: BatchResult) -> None:
        entry = self._handed.pop(result.batch_id, None)
        if entry is None:  # its owner was failed already (the executor was stopped)
            return
        owner, batch, attempts, handed = entry
        attempt = attempts + 1
        error = None if result.error is None else as_exception(result, batch, attempt)
        if error is not None and self._policy.should_retry(error, attempt):
            self._retries.append((owner, batch, attempt))
            self._wake.notify_all()
            return
        if isinstance(owner, Future):
            self._calls.settle(owner, error, result.values)
        else:
            owner.settle(batch, result, error, time.perf_counter() - handed)

    def _fail_everything(self, exc: BaseException) -> None:
        error = concurrent.futures.BrokenExecutor(f"the {self._backend.name} back-end failed: {exc}")
        error.__cause__ = exc
        for owner, _batch, _attempts, _when in self._handed.values():
            if isinstance(owner, Future):
                owner.set_exception(error)
        self._handed.clear()
        for future, _ in self._calls.queue:
            if future.set_running_or_notify_cancel():
                future.set_exception(error)
        self._calls.queue.clear()
        for owner, _batch, _attempts in self._retries:
            if isinstance(owner, Future):
                owner.set_exception(error)
        self._retries.clear()
        for run in self._maps:
            run.stop(error)
        self._maps.clear()

    def _stop_backend(self) -> None:
        if self._owned and self._stopped.acquire(blocking=False):
            self._backend.shutdown()

    def _abort(self, exc: BaseException) -> None:
        """Stop at once: queued work cancelled, running items stopped with the back-end's workers."""
        with self._wake:
            self._closed = self._aborted = True
            self._fail_everything(exc)
        self._stop_backend()
        self._thread.join(timeout=2)  # a daemon: if the back-end's run does not notice, it ends with us
