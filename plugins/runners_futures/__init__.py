"""The `futures` back-end: concurrent.futures.ProcessPoolExecutor, the standard library's modern pool."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Literal

from runners import Backend, Batch, BatchResult, param, run_batch, stream_futures


@dataclass(frozen=True)
class FuturesOptions:
    start_method: Literal["fork", "spawn", "forkserver"] | None = param(
        None, help="how worker processes start; null: Python's default for this platform")
    max_tasks_per_child: int | None = param(
        None, min=1, help="replace a worker after this many batches (needs spawn or forkserver)")


class FuturesBackend(Backend):
    """Runs batches in a ProcessPoolExecutor of `workers` processes."""

    name = "futures"
    Options = FuturesOptions
    separate_processes = True

    def start(self) -> None:
        context = multiprocessing.get_context(self.options.start_method)
        self._pool = ProcessPoolExecutor(self.workers, mp_context=context,
                                         max_tasks_per_child=self.options.max_tasks_per_child)

    def run(self, batches: Iterator[Batch]) -> Iterator[BatchResult]:
        return stream_futures(lambda b: self._pool.submit(run_batch, b), batches, 2 * self.workers, self.name)

    def shutdown(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
