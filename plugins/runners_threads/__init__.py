"""The `threads` back-end: a ThreadPoolExecutor. Helps I/O-bound items; the GIL serialises CPU-bound ones."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from runners.backend import Backend, Batch, BatchResult, Futures, in_flight, run_batch


class ThreadsBackend(Backend):
    """Runs batches on a pool of threads in this process."""

    name = "threads"
    shares_memory = True
    stops_running_items = False  # a thread cannot be stopped: a run that ends waits for its items

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="runners-worker")
        self.on_shutdown(self._pool.shutdown, wait=True, cancel_futures=True)

    def run(self, batches: Iterator[Batch]) -> Iterator[BatchResult]:
        submit = Futures(lambda batch: self._pool.submit(run_batch, batch), self.name)
        return in_flight(submit, batches, 2 * self.workers)
