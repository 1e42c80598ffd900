"""The engine: plan a job, batch its items, run them on a back-end, combine in order, time it all."""

from __future__ import annotations

import dataclasses
import os
import pickle
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from ._backend import Backend, usable_cpus
from ._batcher import MAX_BATCH_BYTES, Batcher
from ._deadline import Expired, check_time_limit, time_limit
from ._errors import (
    ConfigError,
    FailedItems,
    NotPicklable,
    RunnersError,
    RunTimeout,
    TaskStepError,
    short_repr,
)
from ._ordered import OrderedRun, Policy, Tally
from ._registry import load_backend, load_task
from ._task import Task, Verdict
from ._validate import build
from ._worker import IN_WORKER

DEFAULT_SEED = 20260101
MAX_WORKERS = 4096  # a bound that no real pool reaches, so a typo cannot fork-bomb the machine


@dataclass(frozen=True)
class Job:
    """Everything that defines a run, as plain values (from YAML, flags or Python)."""

    task: str | Task | None  # None only where no task runs: runners.Executor
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
    backend, options, workers, policy = plan_backend(job)
    if backend.runs_coroutines and task.run_async is None:
        raise ConfigError(
            f"back-end {job.backend!r} runs async functions, and task {task.name!r} has none; "
            "use a task with run_async (such as iowait) or another back-end", key="backend"
        )
    if backend.pickles_items:
        ensure_picklable(task.run, task.name)
    return Plan(task, params, backend, options, workers, job.chunksize, job.seed, policy)


def plan_backend(job: Job) -> tuple[type[Backend], Any, int, Policy]:
    """The parts of `plan` that do not need the task (what `runners.Executor` takes): the back-end's
    class and typed options, the workers, and the failure policy; raises ConfigError."""
    backend = load_backend(job.backend)
    options = build(backend.Options, job.options, "backend")
    workers = usable_cpus() if job.workers is None else job.workers
    _positive("workers", workers, MAX_WORKERS)
    if job.chunksize is not None:
        check_chunksize(job.chunksize)
    if not isinstance(job.seed, int) or isinstance(job.seed, bool) or not 0 <= job.seed < 2**64:
        raise ConfigError(f"seed: expected an integer from 0 to 2**64 - 1, got {short_repr(job.seed)}",
                          key="seed")
    if backend.separate_processes and os.environ.get(IN_WORKER):
        raise ConfigError(
            f"back-end {job.backend!r} would start a pool of processes inside a runners worker; "
            "nested pools multiply processes (workers x workers) and are refused: run the inner "
            "work with the serial or threads back-end", key="backend"
        )
    return backend, options, workers, _policy(job, backend)


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
    max_bytes = min(backend.max_batch_bytes or MAX_BATCH_BYTES, MAX_BATCH_BYTES)
    batcher = Batcher(items, fn, backend.workers, chunksize, policy.timeout, max_bytes,
                      rounds=backend.runs_in_rounds)
    tally = Tally()
    if on_start is not None:
        on_start(batcher.total)
    began = time.perf_counter()
    chunks = OrderedRun(backend, batcher, policy, tally, progress).chunks()
    finished: list[list[Any]] = []  # kept only when the run goes on past failures, to report them
    values = chain.from_iterable(chunks if policy.fail_fast else _kept(chunks, finished))
    try:
        with time_limit(policy.run_timeout):
            result = _step(task, "combine", task.combine, values, params)
    except Expired:
        done = sum(tally.attempts.values())
        raise RunTimeout(policy.run_timeout, done, batcher.total, backend.name) from None
    except FailedItems as exc:
        exc.results = dict(zip(_indices_outside(exc.unfinished, batcher.issued),
                               chain.from_iterable(finished), strict=False))
        raise
    finally:
        chunks.close()  # if the limit struck in combine, the batches in flight are cancelled here
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


def _kept(chunks: Iterator[list[Any]], into: list[list[Any]]) -> Iterator[list[Any]]:
    """`chunks`, each also appended to `into` as it passes."""
    for chunk in chunks:
        into.append(chunk)
        yield chunk


def _indices_outside(ranges: Sequence[range], total: int) -> Iterator[int]:
    """0..total-1 in order, leaving out the indices in `ranges`."""
    start = 0
    for skipped in sorted(ranges, key=lambda r: r.start):
        yield from range(start, skipped.start)
        start = max(start, skipped.stop)
    yield from range(start, total)


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


def check_chunksize(chunksize: Any) -> None:
    """A chunksize is a positive integer (a job's, or one `Executor.map` call's); ConfigError if not."""
    _positive("chunksize", chunksize, 2**40)


def _positive(key: str, value: Any, most: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
        raise ConfigError(f"{key}: expected a positive integer from 1 to {most}, got {short_repr(value)}",
                          key=key)
