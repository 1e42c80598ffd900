"""The `multiprocessing` back-end: multiprocessing.Pool, the pool most tutorials teach."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Literal

from runners import Backend, Batch, BatchResult, param, run_batch, stream_futures


@dataclass(frozen=True)
class MultiprocessingOptions:
    start_method: Literal["fork", "spawn", "forkserver"] | None = param(
        None, help="how worker processes start; null: Python's default for this platform")
    maxtasksperchild: int | None = param(None, min=1, help="replace a worker after this many batches")


class MultiprocessingBackend(Backend):
    """Runs batches with `Pool.apply_async`, each wrapped in a Future so the core's streaming applies."""

    name = "multiprocessing"
    Options = MultiprocessingOptions
    separate_processes = True

    def start(self) -> None:
        context = multiprocessing.get_context(self.options.start_method)
        self._pool = context.Pool(self.workers, maxtasksperchild=self.options.maxtasksperchild)

    def submit(self, batch: Batch) -> Future:
        future: Future = Future()
        future.set_running_or_notify_cancel()
        self._pool.apply_async(run_batch, (batch,), callback=future.set_result,
                               error_callback=future.set_exception)
        return future

    def run(self, batches: Iterator[Batch]) -> Iterator[BatchResult]:
        return stream_futures(self.submit, batches, 2 * self.workers, self.name)

    def shutdown(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            # terminate, not close: after a failure queued batches must not run on; after success
            # every worker is idle, so nothing is lost. join reaps the processes.
            pool.terminate()
            pool.join()
            self._pool = None
