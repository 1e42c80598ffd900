"""The one loop that keeps a bounded number of batches in flight, for every back-end whose handles to
submitted work can be waited on: concurrent.futures Futures, Ray object refs, dask futures, MPI's.

It submits up to `limit` batches, waits for some to finish in slices of at most WAIT_SECONDS (so that
signals, the run's time limit and lost peers are noticed while it waits: no wait blocks in C for long),
yields each outcome, submits more as room frees up, and cancels what is left when its consumer stops
early. The batches come from an iterator, or from a `Feed` that may have none ready now and more later:
the loop asks it without blocking while results are in flight.
"""

from __future__ import annotations

import abc
import queue
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from ._backend import Batch, BatchResult
from ._transport import transport_failure

H = TypeVar("H")
WAIT_SECONDS = 0.2  # the longest the loop leaves the driver's signal handlers waiting


@runtime_checkable
class Feed(Protocol):
    """Batches that arrive over time: `take(wait)` returns the next one if it comes within `wait`
    seconds, else None; `finished` is true once no more will come."""

    finished: bool

    def take(self, wait: float) -> Batch | None: ...


class Arrivals:
    """A Feed of batches that another thread hands over as they come (`put`), `put(None)` ending the
    pass: MPI's rank 0 relaying the driver's batches; an executor's submissions. Between passes, other
    messages may travel the same way (`reopen`, then `take`)."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.finished = False  # this pass's batches have all come

    def put(self, arrival: Any) -> None:
        self._queue.put(arrival)

    def take(self, wait: float | None) -> Any:
        """The next arrival if it comes within `wait` seconds (None: however long it takes), else None."""
        if self.finished:
            return None
        try:
            arrival = self._queue.get(timeout=wait) if wait != 0 else self._queue.get_nowait()
        except queue.Empty:
            return None
        self.finished = arrival is None
        return arrival

    def __iter__(self) -> Iterator[Any]:
        """The pass's batches one by one, for a consumer that is not the in-flight loop."""
        while not self.finished:
            if (batch := self.take(WAIT_SECONDS)) is not None:
                yield batch

    def reopen(self) -> None:
        """Take arrivals again after the pass ended."""
        self.finished = False


class Handles(abc.ABC, Generic[H]):
    """One kind of handle to a batch in flight: how the loop submits a batch, waits for some to
    finish, reads an outcome and cancels the rest. `backend` names the back-end in transport errors."""

    def __init__(self, backend: str) -> None:
        self.backend = backend

    @abc.abstractmethod
    def submit(self, batch: Batch) -> H:
        """Send `batch` on its way; what this raises is the batch's outcome (`transport_failure`)."""

    @abc.abstractmethod
    def wait(self, handles: list[H], timeout: float) -> Iterable[H]:
        """Those of `handles` that are finished, waiting at most `timeout` seconds for the first."""

    @abc.abstractmethod
    def outcome(self, handle: H, batch: Batch) -> BatchResult:
        """The result of a finished handle, with a failure to travel as `transport_failure` sees it."""

    def cancel(self, handles: list[H]) -> None:
        """Stop `handles`, still in flight when the consumer stopped early (an error, Ctrl-C)."""

    @property
    def open(self) -> bool:
        """Whether batches may still be submitted (false once the workers are gone for good)."""
        return True


class Futures(Handles[Future]):
    """concurrent.futures Futures that `submit` returns (a pool's `submit`, asyncio's, mpi4py's)."""

    def __init__(self, submit: Callable[[Batch], Future], backend: str) -> None:
        super().__init__(backend)
        self._submit = submit

    def submit(self, batch: Batch) -> Future:
        return self._submit(batch)

    def wait(self, handles: list[Future], timeout: float) -> Iterable[Future]:
        return wait(handles, timeout, FIRST_COMPLETED).done

    def outcome(self, handle: Future, batch: Batch) -> BatchResult:
        exc = handle.exception()
        return handle.result() if exc is None else transport_failure(batch, exc, self.backend)

    def cancel(self, handles: list[Future]) -> None:
        for future in handles:
            future.cancel()


class _Pull:
    """An iterator of batches as a Feed: each take is the next batch at once, until there is none."""

    def __init__(self, batches: Iterable[Batch]) -> None:
        self._batches = iter(batches)
        self.finished = False

    def take(self, wait: float) -> Batch | None:
        batch = next(self._batches, None)
        self.finished = batch is None
        return batch


def in_flight(handles: Handles[H], batches: Iterable[Batch] | Feed, limit: int) -> Iterator[BatchResult]:
    """`Backend.run` for back-ends whose handles can be waited on: at most `limit` batches in flight."""
    feed = batches if isinstance(batches, Feed) else _Pull(batches)
    pending: dict[H, Batch] = {}
    try:
        while True:
            while len(pending) < limit and handles.open and not feed.finished:
                batch = feed.take(0.0 if pending else WAIT_SECONDS)
                if batch is None:
                    break  # none ready now (or none left)
                try:
                    pending[handles.submit(batch)] = batch
                except Exception as exc:  # noqa: BLE001 - the batch's failure to set out, reported as such
                    yield transport_failure(batch, exc, handles.backend)
            if not pending:
                if feed.finished or not handles.open:
                    return
                continue
            for handle in handles.wait(list(pending), WAIT_SECONDS):
                yield handles.outcome(handle, pending.pop(handle))
    finally:
        if pending:
            handles.cancel(list(pending))
