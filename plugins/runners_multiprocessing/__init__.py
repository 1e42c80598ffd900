"""The `multiprocessing` back-end: multiprocessing.Pool, the pool most tutorials teach, made safe.

A plain Pool waits forever for a task whose worker died (cpython issue 66587): it starts a new
worker but never fails the lost task. Here each worker announces the batch it starts on a pipe, and a
watcher thread in the driver fails that batch with WorkerLost (naming the signal) as soon as the
worker's process ends, or stops the worker itself when an item outlives its timeout.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal

from runners.backend import (
    Backend,
    Batch,
    BatchResult,
    Futures,
    ItemTimeout,
    Parcel,
    WorkerLost,
    before_forking_workers,
    in_flight,
    param,
    pickle_batch,
    prepare_worker,
    run_pickled_batch,
    signal_name,
)

from ._compat import RecordingPool, keep_descriptor_open

STARTED = struct.Struct("qq")  # (pid, batch id): 16 bytes, below PIPE_BUF, so writes never interleave
WATCH_SECONDS = 0.05
# How long Pool.terminate() may take before its workers are killed and it is left behind. CPython's
# terminate can wait for ever on a large task half-written to the workers' pipe (it stops draining
# the pipe when poll() is momentarily false, while its task thread still writes); seen once in ~10
# fault-matrix runs: a worker died with 4 MB batches queued and the runner never exited.
TERMINATE_SECONDS = 3.0


@dataclass(frozen=True)
class MultiprocessingOptions:
    start_method: Literal["fork", "spawn", "forkserver"] | None = param(
        None, help="how worker processes start; null: Python's default for this platform")
    maxtasksperchild: int | None = param(None, min=1, help="replace a worker after this many batches")


def _terminate(pool: multiprocessing.pool.Pool) -> None:
    pool.terminate()
    pool.join()


_announce_fd: int | None = None  # in a worker: where it says which batch it starts


def _init_worker(announce: Any) -> None:
    global _announce_fd
    _announce_fd = keep_descriptor_open(announce)
    prepare_worker()


def _run_announced(parcel: Parcel) -> BatchResult:
    """Worker side: say which batch this process runs, then run it (a death now names the batch)."""
    os.write(_announce_fd, STARTED.pack(os.getpid(), parcel.id))
    return run_pickled_batch(parcel)


class MultiprocessingBackend(Backend):
    """Runs batches with `Pool.apply_async`, each wrapped in a Future so the core's streaming applies."""

    name = "multiprocessing"
    Options = MultiprocessingOptions
    separate_processes = True
    pickles_items = True
    enforces_timeout = True
    lost_items = "exact"  # each worker says which batch it starts
    names_signal = True

    def start(self) -> None:
        context = multiprocessing.get_context(self.options.start_method)
        # The pool hands the writer to every worker it starts, replacements included: keep it open.
        self._reader, self._writer = context.Pipe(duplex=False)
        self.on_shutdown(self._writer.close)
        self.on_shutdown(self._reader.close)
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[Future, Batch]] = {}
        self._running: dict[int, tuple[int, float]] = {}  # pid -> (batch id, when it started)
        self._processes: list[Any] = []  # every worker the pool made
        self.on_shutdown(before_forking_workers())
        self._pool = RecordingPool(self.workers, _init_worker, (self._writer,), self.options.maxtasksperchild,
                                   context=context, on_new_process=self._remember)
        self.on_shutdown(self._stop_pool)
        self._stop = threading.Event()
        watcher = threading.Thread(target=self._watch, name="runners-pool-watch", daemon=True)
        watcher.start()
        self.on_shutdown(watcher.join)
        self.on_shutdown(self._stop.set)

    def _remember(self, process: Any) -> Any:
        self._processes.append(process)
        return process

    def _submit(self, batch: Batch) -> Future:
        parcel = pickle_batch(batch)
        future: Future = Future()
        future.set_running_or_notify_cancel()
        with self._lock:
            self._pending[batch.id] = (future, batch)
        self._pool.apply_async(_run_announced, (parcel,),
                               callback=lambda result: self._settle(batch.id, result=result),
                               error_callback=lambda exc: self._settle(batch.id, error=exc))
        return future

    def run(self, batches: Iterator[Batch]) -> Iterator[BatchResult]:
        return in_flight(Futures(self._submit, self.name), batches, 2 * self.workers)

    def _settle(self, batch_id: int, result: BatchResult | None = None,
                error: BaseException | None = None) -> None:
        # Runs in the pool's result thread or the watcher: whichever comes first wins, the other is
        # ignored (setting a finished Future twice would raise and kill the pool's result thread).
        with self._lock:
            future, _ = self._pending.pop(batch_id, (None, None))
        if future is None:
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def _watch(self) -> None:
        buffer = b""
        while not self._stop.wait(WATCH_SECONDS):
            try:
                while self._reader.poll():
                    buffer += os.read(self._reader.fileno(), STARTED.size * 256)
            except OSError:
                return  # the pipe was closed: shutting down
            whole = len(buffer) - len(buffer) % STARTED.size
            for pid, batch_id in STARTED.iter_unpack(buffer[:whole]):
                self._running[pid] = (batch_id, time.monotonic())
            buffer = buffer[whole:]
            self._check_workers()

    def _check_workers(self) -> None:
        now = time.monotonic()
        processes = {p.pid: p for p in list(self._processes)}
        for pid, (batch_id, started) in list(self._running.items()):
            with self._lock:
                _, batch = self._pending.get(batch_id, (None, None))
            process = processes.get(pid)
            if batch is None:
                continue
            if process is not None and process.exitcode is not None:
                del self._running[pid]
                reason = f"process {pid} ended with {signal_name(process.exitcode)} while running a batch"
                self._settle(batch_id, error=WorkerLost(reason, self.name, list(batch.indices),
                                                        socket.gethostname(), process.exitcode))
            elif batch.timeout is not None and now - started > batch.timeout * len(batch.items):
                del self._running[pid]
                os.kill(pid, signal.SIGKILL)  # the pool starts a fresh worker in its place
                self._settle(batch_id, error=ItemTimeout(batch.start, batch.timeout, self.name))

    def _stop_pool(self) -> None:
        # terminate, not close: after a failure queued batches must not run on; after success
        # every worker is idle, so nothing is lost. join reaps the processes.
        stopping = threading.Thread(target=_terminate, args=(self._pool,), name="runners-pool-stop",
                                    daemon=True)
        stopping.start()
        stopping.join(TERMINATE_SECONDS)
        if stopping.is_alive():  # wedged (see TERMINATE_SECONDS): its threads are daemons, the workers not
            for process in self._processes:
                if process.exitcode is None:
                    process.kill()
                    process.join()
