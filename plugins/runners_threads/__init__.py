"""The `threads` back-end: a ThreadPoolExecutor. Helps I/O-bound items; the GIL serialises CPU-bound ones."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from runners import Backend, Batch, BatchResult, run_batch, stream_futures


class ThreadsBackend(Backend):
    """Runs batches on a pool of threads in this process."""

    name = "threads"
    shares_memory = True

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="runners-worker")

    def run(self, batches: Iterator[Batch]) -> Iterator[BatchResult]:
        return stream_futures(lambda b: self._pool.submit(run_batch, b), batches, 2 * self.workers, self.name)

    def shutdown(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
