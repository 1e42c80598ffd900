"""The `asyncio` back-end: one event loop in a thread; the items of a batch are awaited concurrently.

For tasks that offer an async per-item function (`Task.run_async`, such as `iowait`). Waits overlap, so
the useful concurrency is far above the CPU count; CPU-bound coroutines still run one at a time.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from runners.backend import Backend, Batch, BatchResult, Futures, in_flight, item_failure, param


@dataclass(frozen=True)
class AsyncioOptions:
    concurrency: int | None = param(
        None, min=1, help="items awaited at once across all batches; null: the worker count")


async def run_batch_async(batch: Batch, limit: asyncio.Semaphore) -> BatchResult:
    """`run_batch` for coroutines: every item of the batch awaited under `limit`; the first failure wins."""
    began = time.perf_counter()

    async def one(item: Any) -> tuple[bool, Any]:
        async with limit:
            try:
                value = batch.fn(item)
                if inspect.isawaitable(value):
                    value = await value
                return True, value
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # noqa: BLE001 - caught here, or SystemExit would stop the loop
                return False, exc

    outcomes = await asyncio.gather(*(one(item) for item in batch.items))
    values: list[Any] = []
    error = None
    for offset, (ok, value) in enumerate(outcomes):
        if not ok:  # like run_batch: keep the values before the first failing item, report that item
            error = item_failure(batch, offset, value)
            break
        values.append(value)
    return BatchResult.here(batch.id, values, error, time.perf_counter() - began)


class AsyncioBackend(Backend):
    """Runs coroutines on an event loop in a background thread of this process."""

    name = "asyncio"
    Options = AsyncioOptions
    shares_memory = True
    runs_coroutines = True

    def start(self) -> None:
        self._loop = asyncio.new_event_loop()
        self.on_shutdown(self._loop.close)
        thread = threading.Thread(target=self._loop.run_forever, name="runners-asyncio", daemon=True)
        thread.start()
        self.on_shutdown(_stop, self._loop, thread)
        limit = self.options.concurrency or self.workers
        # The semaphore must be made inside the loop that uses it.
        self._limit = asyncio.run_coroutine_threadsafe(_semaphore(limit), self._loop).result()

    def run(self, batches: Iterator[Batch]) -> Iterator[BatchResult]:
        def submit(batch: Batch) -> Future:
            return asyncio.run_coroutine_threadsafe(run_batch_async(batch, self._limit), self._loop)

        # Enough batches in flight to keep `concurrency` items waiting even when batches are small.
        limit = max(2, 2 * (self.options.concurrency or self.workers))
        return in_flight(Futures(submit, self.name), batches, limit)


def _stop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    """Cancel every coroutine of `loop`, then stop it and its thread."""
    asyncio.run_coroutine_threadsafe(_cancel_all(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)


async def _semaphore(limit: int) -> asyncio.Semaphore:
    return asyncio.Semaphore(limit)


async def _cancel_all() -> None:
    current = asyncio.current_task()
    pending = [t for t in asyncio.all_tasks() if t is not current]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
