"""Running batches on a started back-end under the failure policy, and handing back values in item order."""

from __future__ import annotations

import pickle
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._backend import PIECE_VALUES, Backend, Batch, BatchResult, ItemFailure, PackedValues
from ._batcher import Batcher
from ._errors import FailedItems, ItemTimeout, RemoteTraceback, RunnersError, TaskError, WorkerLost


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
        where = result.node or result.host
        if where:  # a batch lost with its worker comes back from no node: none of its items ran anywhere
            self.placement[where][result.pid] += len(result.values)
        if result.error is None:
            self.attempts[attempt] += len(result.values)


class InOrder:
    """Batches' values in batch order: one that finishes early waits until every batch before it has
    finished or been given up."""

    def __init__(self) -> None:
        self.next_id = 0  # the batch whose values go out next
        self._finished: dict[int, tuple[int, list[Any] | PackedValues]] = {}  # id -> (first item, values)
        self._given_up: set[int] = set()  # failed batches whose values will never come (fail_fast off)
        self._last = sys.maxsize  # the last batch whose values go out (end_at)

    def finished(self, batch: Batch, values: list[Any] | PackedValues) -> None:
        if batch.id <= self._last:
            self._finished[batch.id] = (batch.start, values)

    def end_at(self, batch: Batch) -> None:
        """Let nothing after `batch` out: later batches' values are dropped, now and when they come."""
        self._last = batch.id
        for later in [i for i in self._finished if i > batch.id]:
            del self._finished[later]

    def give_up(self, batch: Batch) -> None:
        self._given_up.add(batch.id)

    def release(self) -> Iterator[list[Any]]:
        """The values of every batch now due, a list at a time (a batch's, or a packed piece's)."""
        while True:
            if self.next_id in self._finished:
                yield from _chunks(*self._finished.pop(self.next_id))
            elif self.next_id in self._given_up:
                self._given_up.discard(self.next_id)
            else:
                return
            self.next_id += 1


class OrderedRun:
    """Every batch of `batcher` run on `backend`: failures retried, given up or raised as `policy` says,
    and the values handed out in item order as lists (`chunks`), which the engine flattens."""

    def __init__(self, backend: Backend, batcher: Batcher, policy: Policy, tally: Tally,
                 progress: Callable[[int], None] | None = None) -> None:
        self.backend, self.batcher, self.policy, self.tally = backend, batcher, policy, tally
        self.progress = progress
        self.order = InOrder()
        self.attempts: dict[int, int] = {}  # batch id -> times it was run
        self.handed: dict[int, tuple[Batch, float]] = {}  # with the back-end now, and since when
        self.failures: list[RunnersError] = []
        self.unfinished: list[range] = []  # the items of the batches given up

    def chunks(self) -> Iterator[list[Any]]:
        """The values of the run's batches in order, one list at a time. Failed batches that the policy
        retries run again in a further pass over the back-end."""
        source: Iterable[Batch] = self.batcher
        while source:
            retry: list[Batch] = []
            results = self.backend.run(self._handing(source))
            try:
                for result in results:
                    self._settle(result, retry)
                    yield from self.order.release()
            finally:
                close = getattr(results, "close", None)
                if close is not None:
                    close()  # cancels what a back-end still has in flight
            source = retry
        if self.failures:
            raise FailedItems(self.failures, self.batcher.count, self.unfinished)
        if self.order.next_id != self.batcher.count:
            raise RunnersError(f"the back-end returned {self.order.next_id} of {self.batcher.count} "
                               "batches; results were lost")

    def _handing(self, batches: Iterable[Batch]) -> Iterator[Batch]:
        """Pass batches through, noting each one handed to the back-end (so a failure can be retried)
        and when (so the batcher learns what a round trip costs)."""
        for batch in batches:
            self.handed[batch.id] = (batch, time.perf_counter())
            yield batch

    def _settle(self, result: BatchResult, retry: list[Batch]) -> None:
        batch, handed = self.handed.pop(result.batch_id)
        attempt = self.attempts[batch.id] = self.attempts.get(batch.id, 0) + 1
        self.batcher.observe(result, time.perf_counter() - handed)
        self.tally.add(result, attempt)
        if result.error is None:
            self.order.finished(batch, result.values)
            if self.progress is not None:
                self.progress(len(result.values))
            return
        # in flight when it failed: the batches still out, and those this pass already failed
        in_flight = [b.indices for b, _ in self.handed.values()] + [b.indices for b in retry]
        error = as_exception(result, batch, attempt, in_flight)
        if self.policy.should_retry(error, attempt):
            retry.append(batch)
            self.tally.retried[type(error).__name__] += 1
            if isinstance(error, WorkerLost):
                self.tally.lost.add((error.reason, error.host, None if error.exact else tuple(error.items)))
            return
        if self.policy.fail_fast:
            raise error
        self.failures.append(error)
        self.order.give_up(batch)
        self.unfinished.append(batch.indices)


def _chunks(start: int, values: list[Any] | PackedValues) -> Iterator[list[Any]]:
    """The values of the batch that begins at item `start` as lists: packed ones unpickled a piece at a
    time, as the consumer reaches them."""
    if not isinstance(values, PackedValues):
        yield values if isinstance(values, list) else list(values)
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
        yield chunk
        start += len(chunk)


def as_exception(result: BatchResult, batch: Batch, attempt: int = 1,
                 in_flight: Sequence[range] = ()) -> RunnersError:
    """The error of `result`, a failed run of `batch`, as the exception the engine raises or retries.

    Back-ends report what they know; the engine places it: a failure without an index (the batch did
    not unpickle in the worker) is its first item's; a lost worker that names no items lost the batch's,
    or, not `exact` (a broken pool cannot tell), every item that was in flight with it (`in_flight`).
    """
    error = result.error
    if isinstance(error, ItemFailure) and not isinstance(error.exception, BaseException):
        return RunnersError(f"the back-end reported a failure of item {error.index} without an exception "
                            f"(a back-end bug): {error.traceback[-300:]}")
    if isinstance(error, ItemFailure):
        index, item = error.index, error.item
        if index is None:
            index, item = batch.start, batch.items[0] if batch.items else None
        exc = error.exception
        if exc.__traceback__ is None and exc.__cause__ is None:  # it came from another process
            exc.__cause__ = RemoteTraceback(error.traceback)
        where = f"{result.node or result.host} pid {result.pid}" if result.pid else ""
        task_error = TaskError(exc, error.traceback, index, item, where)
        task_error.__cause__ = exc
        error = task_error
    elif isinstance(error, WorkerLost) and not error.items:
        lost = [batch.indices, *([] if error.exact else in_flight)]
        error = WorkerLost(error.reason, error.backend, sorted(i for r in lost for i in r), error.host,
                           error.exitcode, error.exact)
    if attempt > 1:
        error.args = (f"{error} (attempted {attempt} times)",)
    return error
