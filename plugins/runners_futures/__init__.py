"""The `futures` back-end: concurrent.futures.ProcessPoolExecutor, the standard library's modern pool.

When a worker dies the executor breaks and fails every batch in flight (it cannot tell which one the
dead worker held); this back-end reports them as lost with the dead worker's signal, and starts a
fresh executor for whatever the engine sends next (its retries included).
"""

from __future__ import annotations

import multiprocessing
import pickle
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from runners import (
    Backend,
    Batch,
    BatchResult,
    WorkerLost,
    param,
    prepare_worker,
    run_pickled_batch,
    signal_name,
    stream_futures,
)

TERMINATE_SECONDS = 3.0  # how long the executor may take to stop after its workers were terminated


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
        self._pool: ProcessPoolExecutor | None = None
        self._seen: dict[int, Any] = {}
        self._generation = 0  # how many executors were replaced: which one a batch went to
        self._in_flight: dict[int, tuple[int, Batch]] = {}  # submitted, not yet yielded: (executor, batch)
        self._lost: dict[int, WorkerLost] = {}  # executor -> why it broke, once explained
        self._new_pool()

    def _new_pool(self) -> None:
        context = multiprocessing.get_context(self.options.start_method)
        self._pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=prepare_worker,
                                         max_tasks_per_child=self.options.max_tasks_per_child)

    def submit(self, batch: Batch) -> Future:
        if getattr(self._pool, "_broken", False):  # a broken executor refuses all work: replace it
            self._pool.shutdown(wait=True)
            self._new_pool()
            self._generation += 1
        try:
            payload = pickle.dumps(batch)
        except Exception as exc:  # noqa: BLE001 - reported with the item that fails, by future_outcome
            future: Future = Future()
            future.set_exception(exc)
            return future
        future = self._pool.submit(run_pickled_batch, batch.id, payload)
        self._in_flight[batch.id] = (self._generation, batch)
        self._seen.update(getattr(self._pool, "_processes", None) or {})  # no public worker list
        return future

    def run(self, batches: Iterator[Batch]) -> Iterator[BatchResult]:
        for result in stream_futures(self.submit, batches, 2 * self.workers, self.name):
            generation, _ = self._in_flight.get(result.batch_id, (None, None))
            if isinstance(result.error, WorkerLost) and result.error.exitcode is None:
                # one death, one error for every batch the executor lost with it
                if generation not in self._lost:
                    self._lost[generation] = self._explain(generation)
                result.error = self._lost[generation]
            self._in_flight.pop(result.batch_id, None)
            yield result

    def _explain(self, generation: int | None) -> WorkerLost:
        """Name the signal of the worker that died (the executor itself SIGTERMs the others), and
        every item the broken executor had in flight: it cannot tell which of them the dead worker
        held, so neither can this error."""
        # Read exit codes only once the executor's manager thread has reaped its workers: reading
        # them at the same time races it (under forkserver the loser reads 255).
        manager = getattr(self._pool, "_executor_manager_thread", None)
        if manager is not None:
            manager.join(timeout=2.0)
        codes = [p.exitcode for p in self._seen.values() if p.exitcode not in (None, -15)]
        code = codes[0] if codes else None
        reason = f"a worker process ended with {signal_name(code)}; the executor broke and lost its batches"
        lost = [b for g, b in self._in_flight.values() if g == generation]
        items = sorted(i for b in lost for i in range(b.start, b.start + len(b.items)))
        return WorkerLost(reason, self.name, items, socket.gethostname(), code, exact=False)

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> None:
        self._clean_exit = exc is None
        self.shutdown()

    def shutdown(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is None:
            return
        self._pool = None
        if getattr(self, "_clean_exit", False):
            # Every worker is idle: the executor's own protocol stops them. Terminating them here
            # instead killed one that held a queue's lock (an idle worker waits on the call queue
            # holding its read lock), and the other then waited for it for ever (~1 run in 10).
            pool.shutdown(wait=True)
            return
        # After a failure or Ctrl-C: the executor cannot cancel a running item and would wait for it
        # (Python < 3.14 has no terminate_workers), which can be minutes, so stop the workers.
        # Python < 3.12's executor then marks every pending work item failed, and its manager
        # thread dies with InvalidStateError on one whose future the engine already cancelled:
        # drop those first (there is no public way to).
        pending = getattr(pool, "_pending_work_items", None) or {}
        for work_id, item in list(pending.items()):
            if item.future.cancelled():
                pending.pop(work_id, None)
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        # A worker killed holding a queue's lock can leave the executor's manager waiting for ever on
        # the others: wait for it a while, then kill every worker this back-end ever saw.
        stopping = threading.Thread(target=pool.shutdown, kwargs={"wait": True, "cancel_futures": True},
                                    name="runners-executor-stop", daemon=True)
        stopping.start()
        stopping.join(TERMINATE_SECONDS)
        if stopping.is_alive():
            for process in self._seen.values():
                if process.exitcode is None:
                    process.kill()
                    process.join()
