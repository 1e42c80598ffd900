"""The engine: plan a job, batch its items, run them on a back-end, combine in order, time it all."""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
import sys
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from ._backend import (
    IN_WORKER,
    PIECE_VALUES,
    Backend,
    Batch,
    BatchResult,
    ItemFailure,
    PackedValues,
    usable_cpus,
)
from ._deadline import Expired, check_time_limit, time_limit
from ._errors import (
    ConfigError,
    FailedItems,
    ItemTimeout,
    NotPicklable,
    RemoteTraceback,
    RunnersError,
    RunTimeout,
    TaskError,
    TaskStepError,
    WorkerLost,
    short_repr,
)
from ._registry import load_backend, load_task
from ._task import Task, Verdict
from ._validate import build

DEFAULT_SEED = 20260101
TARGET_BATCH_SECONDS = 0.1  # long enough to hide a round trip (0.5-30 ms), short enough to balance
MIN_BATCH_SECONDS = 0.01  # tail batches shrink for balance, but not below this much work
# ... nor below this many times what a batch costs beyond its work, as measured: ~0.5 ms on a
# process pool, but ~5 ms on Ray, ~10 ms on joblib (its results are polled every 10 ms) and ~30 ms on
# dask (its scheduler runs in the driver), where 10-ms batches would cost more than they balance.
# It only stops the shrinking, and no batch exceeds TARGET_BATCH_SECONDS: a back-end that returns a
# window of batches at once, or a first batch that waited for a worker to start, can make every round
# trip look dear.
OVERHEAD_MULTIPLE = 2
# What one batch's items and values may take in the driver (estimated), whatever their count: with
# 2 x workers batches in flight this bounds the driver's memory. Small ints then come ~300,000 to a
# batch when packed (PackedValues: ~5 bytes each), ~44,000 when not, and 100 KB values 15 at a time;
# a fixed item count held 20,000 x 100 KB values as easily.
MAX_BATCH_BYTES = 1536 * 1024
MAX_WORKERS = 4096  # a bound that no real pool reaches, so a typo cannot fork-bomb the machine


@dataclass(frozen=True)
class Job:
    """Everything that defines a run, as plain values (from YAML, flags or Python)."""

    task: str | Task
    params: Mapping[str, Any] = field(default_factory=dict)
    backend: str = "serial"
    options: Mapping[str, Any] = field(default_factory=dict)
    workers: int | None = None  # None: the CPUs this process may use
    chunksize: int | None = None  # None: automatic, sized from the measured cost of an item
    seed: int = DEFAULT_SEED
    retries: int = 2  # times a batch whose worker was lost is run again (on a fresh worker)
    retry_on: tuple[str, ...] = ()  # exception type names whose items are retried too (or "ItemTimeout")
    timeout: float | None = None  # seconds one item may run; the worker is stopped past it
    fail_fast: bool = True  # False: run every item, then report every failure together
    run_timeout: float | None = None  # seconds all the items together may take; then the run stops


@dataclass(frozen=True)
class Policy:
    """What the engine does when a batch fails: retry it, stop the run, or note it and go on."""

    retries: int = 2
    retry_on: tuple[str, ...] = ()
    timeout: float | None = None
    fail_fast: bool = True
    run_timeout: float | None = None

    def should_retry(self, error: RunnersError, attempts: int) -> bool:
        if attempts > self.retries:
            return False
        if isinstance(error, WorkerLost):
            return True
        if isinstance(error, ItemTimeout):
            return "ItemTimeout" in self.retry_on
        if isinstance(error, TaskError):
            names = {cls.__name__ for cls in type(error.exception).__mro__}
            names |= {f"{cls.__module__}.{cls.__qualname__}" for cls in type(error.exception).__mro__}
            return bool(names & set(self.retry_on))
        return False


@dataclass(frozen=True)
class Plan:
    """A validated job: the task and back-end loaded, params and options typed. Nothing started yet."""

    task: Task
    params: Any
    backend: type[Backend]
    options: Any
    workers: int
    chunksize: int | None
    seed: int
    policy: Policy = field(default_factory=Policy)

    def make_backend(self) -> Backend:
        return self.backend(self.options, self.workers)


@dataclass
class Timings:
    startup: float = 0.0
    compute: float = 0.0
    shutdown: float = 0.0

    @property
    def total(self) -> float:
        return self.startup + self.compute + self.shutdown


@dataclass
class RunRecord:
    """What a run produced: the result, its check, where items ran, and how long each phase took."""

    task: str
    params: dict[str, Any]
    backend: str
    options: dict[str, Any]
    workers: int
    chunksize: int | None
    seed: int
    result: Any
    check: Verdict
    timings: Timings
    items: int
    batches: int
    placement: dict[str, dict[int, int]]  # node -> pid -> items it ran
    attempts: dict[int, int] = field(default_factory=dict)  # attempts -> items that took that many
    extra: dict[str, Any] = field(default_factory=dict)  # what back-ends reported in BatchResult.extra
    retried: dict[str, int] = field(default_factory=dict)  # error type -> batches retried after it
    lost_workers: int = 0  # workers whose death cost batches that were then retried

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "params": self.params,
            "backend": self.backend,
            "options": self.options,
            "workers": self.workers,
            "chunksize": self.chunksize if self.chunksize is not None else "auto",
            "seed": self.seed,
            "result": self.result,
            "check": {"ok": self.check.ok, "detail": self.check.detail},
            "timings": {**dataclasses.asdict(self.timings), "total": self.timings.total},
            "items": self.items,
            "batches": self.batches,
            "nodes": {node: sum(pids.values()) for node, pids in self.placement.items()},
            "processes": sum(len(pids) for pids in self.placement.values()),
            "attempts": {str(k): v for k, v in sorted(self.attempts.items())},
            "retried": self.retried,
            "lost_workers": self.lost_workers,
            "extra": self.extra,
        }


def plan(job: Job) -> Plan:
    """Validate `job` strictly and load what it names; raises ConfigError before anything starts."""
    task = load_task(job.task)
    params = build(task.params, job.params, "params")
    backend = load_backend(job.backend)
    options = build(backend.Options, job.options, "backend")
    workers = usable_cpus() if job.workers is None else job.workers
    _positive("workers", workers, MAX_WORKERS)
    if job.chunksize is not None:
        _positive("chunksize", job.chunksize, 2**40)
    if not isinstance(job.seed, int) or isinstance(job.seed, bool) or not 0 <= job.seed < 2**64:
        raise ConfigError(f"seed: expected an integer from 0 to 2**64 - 1, got {short_repr(job.seed)}",
                          key="seed")
    if backend.runs_coroutines and task.run_async is None:
        raise ConfigError(
            f"back-end {job.backend!r} runs async functions, and task {task.name!r} has none; "
            "use a task with run_async (such as iowait) or another back-end", key="backend"
        )
    if backend.separate_processes:
        if os.environ.get(IN_WORKER):
            raise ConfigError(
                f"back-end {job.backend!r} would start a pool of processes inside a runners worker; "
                "nested pools multiply processes (workers x workers) and are refused: run the inner "
                "work with the serial or threads back-end", key="backend"
            )
        ensure_picklable(task.run, task.name)
    return Plan(task, params, backend, options, workers, job.chunksize, job.seed, _policy(job, backend))


def _policy(job: Job, backend: type[Backend]) -> Policy:
    if not isinstance(job.retries, int) or isinstance(job.retries, bool) or job.retries < 0:
        raise ConfigError(f"retries: expected a non-negative integer, got {short_repr(job.retries)}",
                          key="retries")
    retry_on = (job.retry_on,) if isinstance(job.retry_on, str) else job.retry_on
    if not all(isinstance(name, str) and name for name in retry_on):
        raise ConfigError(f"retry_on: expected a list of exception type names, got "
                          f"{short_repr(job.retry_on)}", key="retry_on")
    for key in ("timeout", "run_timeout"):
        value = getattr(job, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 < value < 1e9):
            raise ConfigError(f"{key}: expected a positive number of seconds, got {short_repr(value)}",
                              key=key)
    if job.timeout is not None:
        if not backend.enforces_timeout:
            raise ConfigError(
                f"timeout: back-end {backend.name!r} cannot stop a running item, so it cannot honour a "
                "per-item timeout; use a back-end that can (see the README's back-end table)", key="timeout"
            )
    if not isinstance(job.fail_fast, bool):
        raise ConfigError(f"fail_fast: expected true or false, got {short_repr(job.fail_fast)}",
                          key="fail_fast")
    return Policy(job.retries, tuple(retry_on), job.timeout, job.fail_fast, job.run_timeout)


def run(job: Job | str | Task, *, progress: Callable[[int], None] | None = None,
        on_start: Callable[[int | None], None] | None = None, **overrides: Any) -> RunRecord:
    """Run a job start to finish: `run("pi", backend="futures", workers=2, params={"samples": 10**6})`.

    `progress` and `on_start` are passed to `run_on`.
    """
    if not isinstance(job, Job):
        job = Job(job, **overrides)
    elif overrides:
        job = dataclasses.replace(job, **overrides)
    the_plan = plan(job)
    check_time_limit(the_plan.policy.run_timeout)
    backend = the_plan.make_backend()
    began = time.perf_counter()
    with backend:  # shuts the back-end down on every exit, errors included
        started = time.perf_counter()
        record = run_on(backend, the_plan, progress, on_start)
        finished = time.perf_counter()
    record.timings = Timings(started - began, record.timings.compute, time.perf_counter() - finished)
    return record


def run_on(backend: Backend, the_plan: Plan, progress: Callable[[int], None] | None = None,
           on_start: Callable[[int | None], None] | None = None) -> RunRecord:
    """Run a planned job on a back-end that is already started (so a batch can reuse it).

    In the driver, `on_start(items)` is called once before the first batch with the number of
    items (None when the task's items are a stream of unknown length), and `progress(n)` with the
    number of items each finished batch held.
    The task's own code (split, combine, check) raising is a TaskStepError; with `fail_fast` off,
    a FailedItems carries the values of the items that did finish (`results`).
    """
    task, params, policy = the_plan.task, the_plan.params, the_plan.policy
    items = _step(task, "split", task.split, params, the_plan.seed)
    fn = task.run_async if backend.runs_coroutines else task.run
    # A per-item limit is only exact when a batch holds one item.
    chunksize = 1 if policy.timeout is not None else the_plan.chunksize
    batcher = Batcher(items, fn, backend.workers, chunksize, policy.timeout,
                      min(backend.max_batch_bytes or MAX_BATCH_BYTES, MAX_BATCH_BYTES))
    tally = Tally()
    if on_start is not None:
        on_start(batcher.total)
    began = time.perf_counter()
    stream = ordered_values(backend, batcher, policy, tally, progress)
    finished: list[Any] = []  # kept only when the run goes on past failures, to report them
    values = stream if policy.fail_fast else _kept(stream, finished)
    try:
        with time_limit(policy.run_timeout):
            result = _step(task, "combine", task.combine, values, params)
    except Expired:
        done = sum(tally.attempts.values())
        raise RunTimeout(policy.run_timeout, done, batcher.total, backend.name) from None
    except FailedItems as exc:
        exc.results = dict(zip(_indices_outside(exc.unfinished, batcher.issued), finished, strict=False))
        raise
    finally:
        values.close()  # if the limit struck in combine, the batches in flight are cancelled here
        stream.close()
    compute = time.perf_counter() - began
    return RunRecord(
        task=task.name, params=dataclasses.asdict(params), backend=backend.name,
        options=dataclasses.asdict(backend.options), workers=backend.workers,
        chunksize=the_plan.chunksize, seed=the_plan.seed, result=result,
        check=_step(task, "check", task.verify, result, params), timings=Timings(compute=compute),
        items=batcher.issued, batches=batcher.count,
        placement={node: dict(pids) for node, pids in tally.placement.items()},
        attempts=dict(tally.attempts), extra=tally.extra, retried=dict(tally.retried),
        lost_workers=len(tally.lost),
    )


def _step(task: Task, step: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Call the task's own `split`, `combine` or `check`: what it raises (not the items' errors,
    which reach combine through the values it consumes) is reported as the task's, with its traceback."""
    try:
        return fn(*args)
    except RunnersError:
        raise
    except Exception as exc:  # noqa: BLE001 - the task's code may raise anything
        below = exc.__traceback__.tb_next if exc.__traceback__ is not None else None  # not this frame
        trace = "".join(traceback.format_exception(type(exc), exc, below))
        raise TaskStepError(exc, trace, task.name, step) from exc


def _kept(values: Iterator[Any], into: list[Any]) -> Iterator[Any]:
    """`values`, each also appended to `into` as it passes."""
    for value in values:
        into.append(value)
        yield value


def _indices_outside(ranges: Sequence[range], total: int) -> Iterator[int]:
    """0..total-1 in order, leaving out the indices in `ranges`."""
    start = 0
    for skipped in sorted(ranges, key=lambda r: r.start):
        yield from range(start, skipped.start)
        start = max(start, skipped.stop)
    yield from range(start, total)


@dataclass
class Tally:
    """Where items ran and how many attempts they took, gathered as results arrive."""

    placement: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    attempts: Counter[int] = field(default_factory=Counter)
    extra: dict[str, Any] = field(default_factory=dict)  # the latest value of each key wins
    retried: Counter[str] = field(default_factory=Counter)  # error type -> batches retried after it
    # One entry per dead worker, as its errors describe it (a back-end names the worker: its pid,
    # address, id): all the batches that one death took, however many, count once.
    lost: set[tuple[Any, ...]] = field(default_factory=set)

    def add(self, result: BatchResult, attempt: int) -> None:
        self.extra.update(result.extra)
        self.placement[result.node or result.host][result.pid] += len(result.values)
        if result.error is None:
            self.attempts[attempt] += len(result.values)


def ordered_values(backend: Backend, batcher: Batcher, policy: Policy, tally: Tally,
                   progress: Callable[[int], None] | None = None) -> Iterator[Any]:
    """Run every batch, apply the failure policy, and yield values in item order as they arrive.

    Failed batches that the policy retries are run again in a further pass over the back-end.
    """
    waiting: dict[int, tuple[int, Any]] = {}  # finished batches that wait for an earlier one: (start, values)
    given_up: set[int] = set()  # failed batches skipped over (fail_fast off)
    unfinished: list[range] = []  # ... and their items
    failures: list[RunnersError] = []
    attempts: dict[int, int] = {}
    in_flight: dict[int, tuple[Batch, float]] = {}  # handed to the back-end, and when
    following = 0
    source: Iterable[Batch] = batcher
    while source:
        retry: list[Batch] = []
        results = backend.run(_remembered(source, in_flight))
        try:
            for result in results:
                batch, handed = in_flight.pop(result.batch_id)
                attempt = attempts[batch.id] = attempts.get(batch.id, 0) + 1
                batcher.observe(result, time.perf_counter() - handed)
                tally.add(result, attempt)
                if result.error is not None:
                    error = as_exception(result.error, result, attempt)
                    if policy.should_retry(error, attempt):
                        retry.append(batch)
                        tally.retried[type(error).__name__] += 1
                        if isinstance(error, WorkerLost):
                            tally.lost.add((error.reason, error.host, None if error.exact
                                            else tuple(error.items)))
                        continue
                    if policy.fail_fast:
                        raise error
                    failures.append(error)
                    given_up.add(batch.id)
                    unfinished.append(range(batch.start, batch.start + len(batch.items)))
                else:
                    waiting[batch.id] = (batch.start, result.values)
                    if progress is not None:
                        progress(len(result.values))
                # A batch given up releases the finished ones that waited behind it, as one that
                # finished does.
                while following in waiting or following in given_up:
                    if following in given_up:
                        given_up.discard(following)
                    else:
                        yield from _unpacked(*waiting.pop(following))
                    following += 1
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()  # cancels what a back-end still has in flight
        source = retry
    if failures:
        raise FailedItems(failures, batcher.count, unfinished)
    if following != batcher.count:
        raise RunnersError(f"the back-end returned {following} of {batcher.count} batches; results were lost")


def _unpacked(start: int, values: Iterable[Any]) -> Iterator[Any]:
    """The values of the batch that begins at item `start`, packed ones unpickled a piece at a time."""
    if not isinstance(values, PackedValues):
        yield from values
        return
    end = start + len(values)
    for piece in values.pieces:
        try:
            chunk = pickle.loads(piece)
        except Exception as exc:  # noqa: BLE001 - whatever a value's unpickling raises
            last = min(start + PIECE_VALUES, end) - 1
            raise RunnersError(
                f"items {start}..{last} ran, but one of their values could not be unpickled in the "
                f"driver ({type(exc).__name__}: {exc}); values must unpickle where the run is: define "
                "their classes at the top level of an importable module"
            ) from exc
        yield from chunk
        start += len(chunk)


def _remembered(batches: Iterable[Batch], in_flight: dict[int, tuple[Batch, float]]) -> Iterator[Batch]:
    """Pass batches through, noting each one handed to the back-end (so a failure can be retried) and
    when (so the batcher learns what a round trip costs)."""
    for batch in batches:
        in_flight[batch.id] = (batch, time.perf_counter())
        yield batch


def as_exception(error: ItemFailure | RunnersError, result: BatchResult, attempt: int = 1) -> RunnersError:
    if isinstance(error, ItemFailure) and not isinstance(error.exception, BaseException):
        return RunnersError(f"the back-end reported a failure of item {error.index} without an exception "
                            f"(a back-end bug): {error.traceback[-300:]}")
    if isinstance(error, ItemFailure):
        exc = error.exception
        if exc.__traceback__ is None and exc.__cause__ is None:  # it came from another process
            exc.__cause__ = RemoteTraceback(error.traceback)
        where = f"{result.node or result.host} pid {result.pid}" if result.pid else ""
        task_error = TaskError(exc, error.traceback, error.index, error.item, where)
        task_error.__cause__ = exc
        error = task_error
    if attempt > 1:
        error.args = (f"{error} (attempted {attempt} times)",)
    return error


class Batcher:
    """Cuts items into batches on demand, sizing each from the item cost measured so far.

    Like joblib's auto batching: start with one item, then aim for batches of TARGET_BATCH_SECONDS,
    and shrink towards the end so that the last batches spread over all workers, but not below a
    few times what a round trip costs beyond the work (measured: the back-end's own overhead).
    Whatever their cost, batches hold at most `max_bytes` of items and values (measured on samples,
    or on the packed values as they wait in the driver).
    """

    def __init__(self, items: Sequence[Any] | Iterable[Any], fn: Any, workers: int,
                 chunksize: int | None, timeout: float | None = None,
                 max_bytes: int = MAX_BATCH_BYTES) -> None:
        self.items = items
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.fn = fn
        self.workers = workers
        self.chunksize = chunksize
        self.total = len(items) if isinstance(items, Sized) else None
        self.issued = 0
        self.count = 0
        self.measured = (0.0, 0.0)  # seconds and items of the batches seen, older ones halved each time
        self.overhead: float | None = None  # the least a batch took beyond its work (round trip - work)
        self.item_bytes = 0  # a range slice is a few bytes however long: its items cost nothing here
        self.value_bytes = 0

    def __iter__(self) -> Iterator[Batch]:
        sequence = self.items if isinstance(self.items, Sequence) else None
        stream = None if sequence is not None else iter(self.items)
        while True:
            size = self.next_size()
            if isinstance(sequence, range):
                chunk: Sequence[Any] = sequence[self.issued:self.issued + size]  # a range: pickles in bytes
            elif sequence is not None:
                chunk = list(sequence[self.issued:self.issued + size])
            else:
                chunk = list(islice(stream, size))
            if not chunk:
                return
            if not isinstance(chunk, range):
                self.item_bytes = sampled_bytes(chunk)  # the latest: one big item must not pin sizes at 1
            yield Batch(self.count, self.fn, self.issued, chunk, self.timeout)
            self.issued += len(chunk)
            self.count += 1

    def observe(self, result: BatchResult, round_trip: float) -> None:
        """Learn from a finished batch, which took `round_trip` seconds from hand-over to result."""
        values = result.values
        if values:  # what waits in the driver (pickled pieces, or objects): the latest, not the largest
            packed = isinstance(values, PackedValues)
            self.value_bytes = values.nbytes // len(values) + 1 if packed else sampled_bytes(values)
        if result.values and result.seconds > 0:
            # Weighted by items: the first one-item batches, whose seconds are mostly the timer's and
            # the call's, must not hold the estimate up while batches of thousands come back.
            seconds, items = self.measured
            self.measured = (0.5 * seconds + result.seconds, 0.5 * items + len(result.values))
        # The least, not an average: a batch that waited behind another in a worker did not cost more.
        beyond = max(round_trip - result.seconds, 0.0)
        self.overhead = beyond if self.overhead is None else min(self.overhead, beyond)

    @property
    def item_seconds(self) -> float | None:
        """What an item costs, as measured so far; None before the first batch with values."""
        seconds, items = self.measured
        return seconds / items if items else None

    def next_size(self) -> int:
        if self.chunksize is not None:
            return self.chunksize
        measured = self.item_seconds
        if measured is None:
            return 1
        cost = max(measured, 1e-9)
        least = max(MIN_BATCH_SECONDS, OVERHEAD_MULTIPLE * (self.overhead or 0.0))
        size = int(TARGET_BATCH_SECONDS / cost)  # `least` only stops the shrinking: never above this
        if self.total is not None:
            remaining = self.total - self.issued
            balanced = max(math.ceil(remaining / (2 * self.workers)), int(least / cost))
            size = min(size, balanced)
        return max(1, min(size, self.max_bytes // max(self.item_bytes + self.value_bytes, 1)))


def sampled_bytes(values: Sequence[Any], samples: int = 5) -> int:
    """Bytes per element of `values` in memory, from up to `samples` elements spread over it, plus
    its slot in the list. An estimate, for sizing batches, not an account."""
    step = max(1, len(values) // samples)
    picked = [values[i] for i in range(0, len(values), step)][:samples]
    return max(_footprint(value) for value in picked) + 8


ATOMS = (str, bytes, bytearray, int, float, complex, bool, type(None))


def _footprint(value: Any, depth: int = 3) -> int:
    """`value`'s size and, a few levels down, that of what it holds (container elements, dict entries,
    an object's attributes), each level from up to 16 samples. Anything odd counts as 64 bytes: a
    user's object may raise from __sizeof__ or from an attribute lookup, and sizing must not fail."""
    try:
        numpy = sys.modules.get("numpy")  # not imported here: no numpy loaded, no arrays to size
        if numpy is not None and isinstance(value, numpy.ndarray):
            return max(sys.getsizeof(value), value.nbytes)  # a view's getsizeof leaves out the data
        size = sys.getsizeof(value)
        if depth == 0 or isinstance(value, ATOMS):
            return size
        if isinstance(value, dict):
            inner, count = [x for pair in islice(value.items(), 16) for x in pair], 2 * len(value)
        elif isinstance(value, tuple | list | set | frozenset):
            inner, count = list(islice(value, 16)), len(value)
        elif isinstance(getattr(value, "__dict__", None), dict):
            inner, count = list(islice(vars(value).values(), 16)), len(vars(value))
        else:
            return size
        held = sum(_footprint(v, depth - 1) for v in inner)
        return size + held * count // max(len(inner), 1)
    except Exception:  # noqa: BLE001 - see the docstring
        return 64


def ensure_picklable(fn: Any, task: str) -> None:
    """Fail early, with the fix, when a task's function cannot travel to worker processes."""
    try:
        pickle.dumps(fn)
    except Exception as exc:  # noqa: BLE001 - pickling raises many types; all mean the same here
        name = getattr(fn, "__qualname__", repr(fn))
        raise NotPicklable(
            f"task {task!r}: its function {name!r} cannot be pickled to send it to worker processes "
            f"({type(exc).__name__}: {exc}); define it with 'def' at the top level of an importable "
            "module (not a lambda, a nested function or a method) and name it as module:function"
        ) from exc


def _positive(key: str, value: Any, most: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
        raise ConfigError(f"{key}: expected a positive integer from 1 to {most}, got {short_repr(value)}",
                          key=key)
