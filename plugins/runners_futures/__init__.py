"""The `futures` back-end: concurrent.futures.ProcessPoolExecutor, the standard library's modern pool.

When a worker dies the executor breaks and fails every batch in flight (it cannot tell which one the
dead worker held); this back-end reports them as lost with the dead worker's signal, and starts a
fresh executor for whatever the engine sends next (its retries included).
"""

from __future__ import annotations

import multiprocessing
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from runners.backend import (
    Backend,
    Batch,
    BatchResult,
    Futures,
    WorkerLost,
    before_forking_workers,
    in_flight,
    param,
    pickle_batch,
    prepare_worker,
    run_pickled_batch,
    signal_name,
)

from . import _compat

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
    pickles_items = True
    lost_items = "in flight"
    names_signal = True

    def start(self) -> None:
        self._seen: dict[int, Any] = {}  # every worker process of every executor, by pid
        self._generation = 0  # how many executors were replaced: which one a batch went to
        self._in_flight: dict[int, tuple[int, Batch]] = {}  # submitted, not yet yielded: (executor, batch)
        self._lost: dict[int, WorkerLost] = {}  # executor -> why it broke, once explained
        self._abandoned = False  # a run stopped early, leaving items that may still be running
        self.on_shutdown(before_forking_workers())
        self._pool = self._new_pool()
        self.on_shutdown(self._stop_pool)

    def _new_pool(self) -> ProcessPoolExecutor:
        context = multiprocessing.get_context(self.options.start_method)
        return ProcessPoolExecutor(self.workers, mp_context=context, initializer=prepare_worker,
                                   max_tasks_per_child=self.options.max_tasks_per_child)

    def _submit(self, batch: Batch) -> Future:
        if _compat.is_broken(self._pool):  # a broken executor refuses all work: replace it
            self._pool.shutdown(wait=True)
            self._pool = self._new_pool()
            self._generation += 1
        future = self._pool.submit(run_pickled_batch, pickle_batch(batch))
        self._in_flight[batch.id] = (self._generation, batch)
        self._seen.update(_compat.worker_processes(self._pool))
        return future

    def run(self, batches: Iterator[Batch]) -> Iterator[BatchResult]:
        results = in_flight(Futures(self._submit, self.name), batches, 2 * self.workers)
        try:
            for result in results:
                # Not `generation, _ = ...`: a name here would keep the batch (and what its items
                # reference) alive while this generator waits for the next result.
                generation = self._in_flight.get(result.batch_id, (None, None))[0]
                if isinstance(result.error, WorkerLost) and result.error.exitcode is None:
                    # one death, one error for every batch the executor lost with it
                    if generation not in self._lost:
                        self._lost[generation] = self._explain(generation)
                    result.error = self._lost[generation]
                self._in_flight.pop(result.batch_id, None)
                yield result
        finally:
            results.close()
            self._abandoned |= bool(self._in_flight)
            self._in_flight.clear()

    def _explain(self, generation: int | None) -> WorkerLost:
        """Name the signal of the worker that died (the executor itself SIGTERMs the others), and
        every item the broken executor had in flight: it cannot tell which of them the dead worker
        held, so neither can this error."""
        _compat.wait_until_reaped(self._pool, 2.0)
        codes = [p.exitcode for p in self._seen.values() if p.exitcode not in (None, -15)]
        code = codes[0] if codes else None
        reason = f"a worker process ended with {signal_name(code)}; the executor broke and lost its batches"
        lost = [b for g, b in self._in_flight.values() if g == generation]
        items = sorted(i for b in lost for i in b.indices)
        return WorkerLost(reason, self.name, items, socket.gethostname(), code, exact=False)

    def _stop_pool(self) -> None:
        if not self._abandoned:
            # Every worker is idle: the executor's own protocol stops them. Terminating them here
            # instead killed one that held a queue's lock (an idle worker waits on the call queue
            # holding its read lock), and the other then waited for it for ever (~1 run in 10).
            self._pool.shutdown(wait=True)
            return
        # After a run stopped early: the executor cannot cancel a running item and would wait for it,
        # which can be minutes, so stop the workers. A worker killed holding a queue's lock can leave
        # the executor's manager waiting for ever on the others: wait for it a while, then kill every
        # worker this back-end ever saw.
        _compat.terminate_workers(self._pool)
        stopping = threading.Thread(target=self._pool.shutdown, kwargs={"wait": True, "cancel_futures": True},
                                    name="runners-executor-stop", daemon=True)
        stopping.start()
        stopping.join(TERMINATE_SECONDS)
        if stopping.is_alive():
            for process in self._seen.values():
                if process.exitcode is None:
                    process.kill()
                    process.join()
