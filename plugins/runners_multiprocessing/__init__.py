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
import pickle
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal

from runners import (
    Backend,
    Batch,
    BatchResult,
    ItemTimeout,
    WorkerLost,
    param,
    prepare_worker,
    run_pickled_batch,
    signal_name,
    stream_futures,
)

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


class _RecordingPool(multiprocessing.pool.Pool):
    """A Pool that hands every worker process it makes (replacements too) to `on_new_process`.

    Pool has no public worker list, and its own list drops a dead worker within 0.1 s: too soon to
    read the exit code of one that died at once. Pool makes processes through `self.Process`, which an
    instance attribute may shadow.
    """

    def __init__(self, *args: Any, on_new_process: Any, **kwargs: Any) -> None:
        self.Process = lambda ctx, *a, **kw: on_new_process(ctx.Process(*a, **kw))
        super().__init__(*args, **kwargs)


def _terminate(pool: multiprocessing.pool.Pool) -> None:
    pool.terminate()
    pool.join()


_announce_fd: int | None = None  # in a worker: where it says which batch it starts


def _init_worker(announce: Any) -> None:
    global _announce_fd
    _announce_fd = announce.fileno()
    announce._handle = None  # keep the descriptor open for the worker's life, without a finaliser
    prepare_worker()


def _run_announced(batch_id: int, payload: bytes) -> BatchResult:
    """Worker side: say which batch this process runs, then run it (a death now names the batch)."""
    os.write(_announce_fd, STARTED.pack(os.getpid(), batch_id))
    return run_pickled_batch(batch_id, payload)


class MultiprocessingBackend(Backend):
    """Runs batches with `Pool.apply_async`, each wrapped in a Future so the core's streaming applies."""

    name = "multiprocessing"
    Options = MultiprocessingOptions
    separate_processes = True
    enforces_timeout = True

    def start(self) -> None:
        context = multiprocessing.get_context(self.options.start_method)
        # The pool hands the writer to every worker it starts, replacements included: keep it open.
        self._reader, self._writer = context.Pipe(duplex=False)
        self._lock = threading.Lock()
        self._pending: dict[int, tuple[Future, Batch]] = {}
        self._running: dict[int, tuple[int, float]] = {}  # pid -> (batch id, when it started)
        self._processes: list[Any] = []  # every worker the pool made
        self._pool = _RecordingPool(self.workers, _init_worker, (self._writer,),
                                    self.options.maxtasksperchild, context=context,
                                    on_new_process=self._remember)
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="runners-pool-watch", daemon=True)
        self._watcher.start()

    def _remember(self, process: Any) -> Any:
        self._processes.append(process)
        return process

    def submit(self, batch: Batch) -> Future:
        future: Future = Future()
        future.set_running_or_notify_cancel()
        try:
            payload = pickle.dumps(batch)
        except Exception as exc:  # noqa: BLE001 - reported with the item that fails, by future_outcome
            future.set_exception(exc)
            return future
        with self._lock:
            self._pending[batch.id] = (future, batch)
        self._pool.apply_async(_run_announced, (batch.id, payload),
                               callback=lambda result: self._settle(batch.id, result=result),
                               error_callback=lambda exc: self._settle(batch.id, error=exc))
        return future

    def run(self, batches: Iterator[Batch]) -> Iterator[BatchResult]:
        return stream_futures(self.submit, batches, 2 * self.workers, self.name)

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
                items = list(range(batch.start, batch.start + len(batch.items)))
                reason = f"process {pid} ended with {signal_name(process.exitcode)} while running a batch"
                self._settle(batch_id, error=WorkerLost(reason, self.name, items, socket.gethostname(),
                                                        process.exitcode))
            elif batch.timeout is not None and now - started > batch.timeout * len(batch.items):
                del self._running[pid]
                os.kill(pid, signal.SIGKILL)  # the pool starts a fresh worker in its place
                self._settle(batch_id, error=ItemTimeout(batch.start, batch.timeout, self.name))

    def shutdown(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is None:
            return
        self._stop.set()
        self._watcher.join()
        # terminate, not close: after a failure queued batches must not run on; after success
        # every worker is idle, so nothing is lost. join reaps the processes.
        stopping = threading.Thread(target=_terminate, args=(pool,), name="runners-pool-stop", daemon=True)
        stopping.start()
        stopping.join(TERMINATE_SECONDS)
        if stopping.is_alive():  # wedged (see TERMINATE_SECONDS): its threads are daemons, the workers not
            for process in self._processes:
                if process.exitcode is None:
                    process.kill()
                    process.join()
        self._reader.close()
        self._writer.close()
        self._pool = None
