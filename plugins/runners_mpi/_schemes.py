"""The two ways MPI ranks share batches. Each has a root side (driven by the engine on rank 0) and a
worker side (`serve`, on every other rank, until the root calls `finish` with the run's exit code).

Batches travel pickled (`Parcel`) and are unpickled only by `run_parcel` on the rank that runs them, as
the process back-ends do (`runners.run_pickled_batch`): an argument whose unpickling raises is then
that batch's error, not a dead rank or a wedged collective.
"""

from __future__ import annotations

import os
import pickle
import traceback
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from itertools import islice
from typing import Any, NamedTuple

from runners import (
    Batch,
    BatchResult,
    ItemFailure,
    WorkerLost,
    future_outcome,
    run_pickled_batch,
    stream_futures,
    worker_environment,
)

from ._node import ItemStopped, stop_requested

STOP = "stop"
RESULT_TAG = 17  # a worker rank's result of an spmd round, sent to the root point to point
WORKER_ENVIRONMENT = worker_environment()  # ranks only run items: no nested pools, one BLAS thread


class Parcel(NamedTuple):
    """A batch pickled where it was made; `start` and `items` stand in for the batch's in
    `stream_futures`, so that an error it reports keeps index -1, which `outcome` places on the batch."""

    id: int
    payload: bytes
    start: int = -1
    items: tuple = ()


def parcels(batches: Iterator[Batch], held: dict[int, Batch], refused: list[BatchResult]) -> Iterator[Parcel]:
    """`batches` pickled; each sent one goes into `held`, each that does not pickle into `refused`."""
    for batch in batches:
        try:
            parcel = Parcel(batch.id, pickle.dumps(batch))
        except Exception as exc:  # noqa: BLE001 - any pickling failure: the core names the item and the fix
            refused.append(outcome(batch, error=exc))
            continue
        held[batch.id] = batch
        yield parcel


def outcome(batch: Batch, result: BatchResult | None = None,
            error: BaseException | None = None) -> BatchResult:
    """The core's reading of `batch`'s result or sending error (the same messages as the pool back-ends)."""
    future: Future = Future()
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
    return future_outcome(future, batch, "mpi")


def run_parcel(parcel: Parcel) -> BatchResult:
    """Worker side: run the batch; a result that cannot be pickled back becomes its error instead."""
    if (signum := stop_requested()) is not None:  # told to stop: rank 0 is ending the job
        return BatchResult(parcel.id, [], WorkerLost(str(ItemStopped(signum)), "mpi"))
    result = run_pickled_batch(parcel.id, parcel.payload)
    try:
        pickle.dumps(result)
    except Exception as exc:  # noqa: BLE001 - sending it would fail on this rank, far from the engine
        error = RuntimeError("the batch's result cannot be pickled to send it back: "
                             f"{type(exc).__name__}: {exc}")
        failure = ItemFailure(-1, None, error, "".join(traceback.format_exception(exc)))
        return BatchResult(parcel.id, [], failure, result.host, result.pid, result.seconds)
    return result


def limit_worker() -> None:
    """For a rank that only runs items: what `runners.prepare_worker` does, but its driver watch (the
    launcher is this rank's parent, and stops it) and its signal handling (Ctrl-C is handled here)."""
    from threadpoolctl import threadpool_limits

    os.environ.update(WORKER_ENVIRONMENT)
    threadpool_limits(1)  # libraries loaded already


@contextmanager
def as_worker() -> Iterator[None]:
    """Rank 0 under the user's mpiexec drives the engine and runs items: worker limits for those only."""
    if os.environ.get("RUNNERS_IN_WORKER"):  # a job runners started: every rank is limited already
        yield
        return
    from threadpoolctl import threadpool_limits

    saved = {name: os.environ.get(name) for name in WORKER_ENVIRONMENT}
    os.environ.update(WORKER_ENVIRONMENT)
    try:
        with threadpool_limits(1):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_here(parcel: Parcel) -> BatchResult:
    with as_worker():
        return run_parcel(parcel)


class MasterWorker:
    """mpi4py's MPICommExecutor: the root hands each batch to whichever worker rank is free.

    Dynamic balance, but the root only dispatches: `-n N` gives N-1 computing ranks (with `-n 1` the
    root runs batches in a thread).
    """

    def __init__(self, comm: Any) -> None:
        from mpi4py.futures import MPICommExecutor

        self.comm = comm
        self.workers = max(1, comm.Get_size() - 1)
        self._context = MPICommExecutor(comm, root=0)
        # On worker ranks this serves batches and returns None only once the root has shut down.
        self.executor = self._context.__enter__()

    def run(self, batches: Iterator[Parcel]) -> Iterator[BatchResult]:
        return stream_futures(lambda p: self.executor.submit(run_parcel, p), batches, 2 * self.workers, "mpi")

    def finish(self, code: int) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.comm.bcast((STOP, code), root=0)

    def serve(self) -> int:
        return self.comm.bcast(None, root=0)[1]


class Spmd:
    """Scatter / compute / collect in rounds: every rank, the root included, runs one batch per round.

    No dispatcher rank and one scatter per round, but a round lasts as long as its slowest batch.
    """

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        self.workers = comm.Get_size()

    def run(self, batches: Iterator[Parcel]) -> Iterator[BatchResult]:
        from mpi4py import MPI

        while True:
            round_ = list(islice(batches, self.workers))
            if not round_:
                return
            parts: list[Any] = round_ + [None] * (self.workers - len(round_))  # None: sit this round out
            mine = self.comm.scatter(parts, root=0)
            waiting = len(round_) - 1
            try:
                # The root's own result first and the others as they come (not one gather at the
                # round's end): an error is seen, and fail-fast stops the job, without waiting for
                # the round's slowest batch.
                yield run_here(mine)
                while waiting:
                    result = self.comm.recv(source=MPI.ANY_SOURCE, tag=RESULT_TAG)
                    waiting -= 1
                    yield result
            finally:  # stopped early: take what the ranks still send, so none is left blocked in send
                for _ in range(waiting):
                    self.comm.recv(source=MPI.ANY_SOURCE, tag=RESULT_TAG)

    def finish(self, code: int) -> None:
        self.comm.scatter([(STOP, code)] * self.workers, root=0)

    def serve(self) -> int:
        while True:
            message = self.comm.scatter(None, root=0)
            if isinstance(message, tuple) and message[0] == STOP:
                return message[1]
            if message is not None:
                try:
                    result = run_parcel(message)
                except ItemStopped as stopped:  # raised outside the item itself, as it ended
                    result = BatchResult(message.id, [], WorkerLost(str(stopped), "mpi"))
                self.comm.send(result, dest=0, tag=RESULT_TAG)


SCHEMES = {"master-worker": MasterWorker, "spmd": Spmd}
