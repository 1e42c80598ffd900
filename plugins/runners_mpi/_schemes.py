"""The two ways MPI ranks share batches. Each has a root side (driven by the engine on rank 0) and a
worker side (`serve`, on every other rank, until the root calls `finish` with the run's exit code).

Batches travel pickled (`Parcel`) and are unpickled only on the rank that runs them (`run_parcel`), as
on every process back-end: an argument whose unpickling raises is then that batch's error, not a dead
rank or a wedged collective. The root takes batches from the engine (pickled here) or parcels that the
driver already pickled (in a job the back-end started itself, see `__main__`).
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from typing import Any

from runners.backend import (
    Batch,
    BatchResult,
    Feed,
    Futures,
    Parcel,
    WorkerLost,
    environment,
    in_flight,
    pickle_batch,
    run_pickled_batch,
    transport_failure,
    worker_environment,
)

from ._node import ItemStopped, stop_requested
from ._waits import end_job_at_exit, receive, send_all, wait_sent

STOP = "stop"
WORK_TAG, RESULT_TAG = 16, 17  # a batch of an spmd round (or STOP) for a worker rank; its result
DRAIN_SECONDS = 5.0  # a run stopped early: how long the ranks may take to hand back what they hold
WORKER_ENVIRONMENT = worker_environment()  # ranks only run items: no nested pools, one BLAS thread
Work = Iterable[Batch | Parcel] | Feed  # what the root runs: the engine's batches, or the driver's parcels


def parcel_of(batch: Batch | Parcel) -> Parcel:
    return batch if isinstance(batch, Parcel) else pickle_batch(batch)


def run_parcel(parcel: Parcel) -> BatchResult:
    """Worker side: run the batch; a result that cannot be pickled back becomes its error instead."""
    if (signum := stop_requested()) is not None:  # told to stop: rank 0 is ending the job
        return BatchResult(parcel.id, [], WorkerLost(str(ItemStopped(signum)), "mpi"))
    result = run_pickled_batch(parcel)
    try:
        pickle.dumps(result)
    except Exception as exc:  # noqa: BLE001 - sending it would fail on this rank, far from the engine
        return transport_failure(parcel, exc, "mpi")
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

    with environment(WORKER_ENVIRONMENT), threadpool_limits(1):
        yield


def run_here(parcel: Parcel) -> BatchResult:
    with as_worker():
        return run_parcel(parcel)


class MasterWorker:
    """mpi4py's MPICommExecutor: the root hands each batch to whichever worker rank is free.

    Dynamic balance, but the root only dispatches: `-n N` gives N-1 computing ranks (with `-n 1` the
    root runs batches in a thread).
    """

    def __init__(self, comm: Any, hosts: list[str]) -> None:
        from mpi4py.futures import MPICommExecutor

        self.comm = comm
        self.workers = max(1, comm.Get_size() - 1)
        self._context = MPICommExecutor(comm, root=0)
        # On worker ranks this serves batches and returns None only once the root has shut down.
        self.executor = self._context.__enter__()

    def run(self, batches: Work) -> Iterator[BatchResult]:
        submit = Futures(lambda batch: self.executor.submit(run_parcel, parcel_of(batch)), "mpi")
        return in_flight(submit, batches, 2 * self.workers)

    def finish(self, code: int) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.comm.bcast((STOP, code), root=0)

    def serve(self) -> int:
        return self.comm.bcast(None, root=0)[1]


class Spmd:
    """Every rank, the root included, runs one batch of each round: batch i of a round on rank i.

    No dispatcher rank. From the second round on, the root deals the next round before it runs its own
    batch of this one, and then takes this round's results: a rank that finishes its batch starts the
    next at once, instead of waiting for the round's slowest batch and the next round's dealing (pi's
    compute: 0.94-0.96x the time with a barrier at each round's end, benchmarks/README.md). The root takes
    results only between its own batches, so a large result (one that MPI sends only as the root takes
    it) is taken as the round ends, not a batch later. Each round is sized from the results of all but
    the round before it; the second from the first's, so that it is not one item a batch again.

    Every wait polls (`_waits`): a run stopped early waits DRAIN_SECONDS at most for the results still
    owed, and a rank that has not answered by then (busy, or its host unreachable) is named and the job
    ends with MPI_Abort.
    """

    def __init__(self, comm: Any, hosts: list[str]) -> None:
        self.comm = comm
        self.hosts = hosts  # by rank: to name a rank that does not answer
        self.workers = comm.Get_size()
        self.silent: list[int] = []  # ranks that did not answer in time: the job must be aborted
        self._sends: list[Any] = []  # batches on their way to the ranks (kept until they complete)
        self._stops: dict[int, Any] = {}

    def run(self, batches: Work) -> Iterator[BatchResult]:
        pending = iter(batches)
        owing: dict[int, int] = {}  # rank -> results it still owes
        try:
            own, _ = yield from self._deal(pending, owing)
            ahead: set[int] = set()  # the ranks that hold a batch of the round dealt ahead
            first = True
            while own is not None:
                following = None
                if not first:
                    following, ahead = yield from self._deal(pending, owing)
                # The root's own result first and the others as they come (not one gather at the
                # round's end): an error is seen, and fail-fast stops the job, without waiting for
                # the round's slowest batch.
                yield run_here(own)
                # this round's results: a rank dealt the next round still owes that one
                while any(count > (1 if rank in ahead else 0) for rank, count in owing.items()):
                    yield self._result(owing)
                if first:
                    following, _ = yield from self._deal(pending, owing)
                    first = False
                own = following
            wait_sent(self._sends)  # done: every rank answered
        finally:  # stopped early: take what the ranks still send, so none is left blocked in send
            deadline = time.monotonic() + DRAIN_SECONDS
            while owing and (late := receive(self.comm, None, RESULT_TAG, deadline)) is not None:
                settle(owing, late[0])
            self.silent += sorted(owing)

    def _deal(self, pending: Iterator[Batch | Parcel],
              owing: dict[int, int]) -> Generator[BatchResult, None, tuple[Parcel | None, set[int]]]:
        """Send the next round's batches to ranks 1.. and return the root's (None: no more rounds) and
        the ranks sent one; yields the failure of each batch that cannot be pickled, at once."""
        while round_ := list(islice(pending, self.workers)):
            parcels: list[Parcel] = []
            for batch in round_:
                try:
                    parcels.append(parcel_of(batch))
                except Exception as exc:  # noqa: BLE001 - it cannot travel: its failure, at once
                    yield transport_failure(batch, exc, "mpi")
            if not parcels:
                continue
            # kept until they complete: dropped, MPI would send freed memory
            self._sends = [send for send in self._sends if not send.Test()]
            for rank in range(1, len(parcels)):
                self._sends.append(self.comm.isend(parcels[rank], dest=rank, tag=WORK_TAG))
                owing[rank] = owing.get(rank, 0) + 1
            return parcels[0], set(range(1, len(parcels)))
        return None, set()

    def _result(self, owing: dict[int, int]) -> BatchResult:
        """The next result a rank sends (waiting for it), settled against what that rank owes."""
        source, result = receive(self.comm, None, RESULT_TAG)
        settle(owing, source)
        return result

    def finish(self, code: int) -> None:
        stops = {rank: (STOP, code) for rank in range(1, self.workers) if rank not in self.silent}
        self._stops = send_all(self.comm, stops, WORK_TAG, time.monotonic() + DRAIN_SECONDS)  # kept
        silent = self.silent + list(self._stops)
        if silent:
            names = ", ".join(f"{rank} on {self.hosts[rank]}" for rank in sorted(silent))
            end_job_at_exit(self.comm, code, f"mpi: rank {names} did not answer within {DRAIN_SECONDS:g} "
                            "s of the run's end (still busy with an item, or its host unreachable)")

    def serve(self) -> int:
        while True:
            message = receive(self.comm, 0, WORK_TAG)[1]
            if isinstance(message, tuple) and message[0] == STOP:
                return message[1]
            try:
                result = run_parcel(message)
            except ItemStopped as stopped:  # raised outside the item itself, as it ended
                result = BatchResult(message.id, [], WorkerLost(str(stopped), "mpi"))
            # Sent before the next batch starts: a small result goes at once (MPI buffers it), while a
            # large one goes only as the root takes it, and a rank busy with its next batch would hold
            # it back (measured: tiny's 125,000 values came a batch late, and the driver's window ran dry).
            wait_sent([self.comm.isend(result, dest=0, tag=RESULT_TAG)])


def settle(owing: dict[int, int], rank: int) -> None:
    """`rank` answered one of the batches it held."""
    owing[rank] -= 1
    if not owing[rank]:
        del owing[rank]


SCHEMES = {"master-worker": MasterWorker, "spmd": Spmd}
