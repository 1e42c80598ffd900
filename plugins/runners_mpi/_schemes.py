"""The two ways MPI ranks share batches. Each has a root side (driven by the engine on rank 0) and a
worker side (`serve`, on every other rank, until the root calls `finish` with the run's exit code).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import Any

from runners import Batch, BatchResult, run_batch, stream_futures

STOP = "stop"


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

    def run(self, batches: Iterator[Batch]) -> Iterator[BatchResult]:
        return stream_futures(lambda b: self.executor.submit(run_batch, b), batches,
                              2 * self.workers, "mpi")

    def finish(self, code: int) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.comm.bcast((STOP, code), root=0)

    def serve(self) -> int:
        return self.comm.bcast(None, root=0)[1]


class Spmd:
    """Scatter / compute / gather in rounds: every rank, the root included, runs one batch per round.

    No dispatcher rank and one collective per round, but a round lasts as long as its slowest batch.
    """

    def __init__(self, comm: Any) -> None:
        self.comm = comm
        self.workers = comm.Get_size()

    def run(self, batches: Iterator[Batch]) -> Iterator[BatchResult]:
        while True:
            round_ = list(islice(batches, self.workers))
            if not round_:
                return
            parts: list[Any] = round_ + [None] * (self.workers - len(round_))  # None: sit this round out
            mine = self.comm.scatter(parts, root=0)
            results = self.comm.gather(run_batch(mine), root=0)
            yield from (r for r in results if r is not None)

    def finish(self, code: int) -> None:
        self.comm.scatter([(STOP, code)] * self.workers, root=0)

    def serve(self) -> int:
        while True:
            message = self.comm.scatter(None, root=0)
            if isinstance(message, tuple) and message[0] == STOP:
                return message[1]
            self.comm.gather(run_batch(message) if message is not None else None, root=0)


SCHEMES = {"master-worker": MasterWorker, "spmd": Spmd}
