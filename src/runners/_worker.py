"""What runs where the items run: a batch's items called one after another, and the set-up of a process
that only runs items (no driver signal handling, no nested pools, one BLAS thread, gone with the driver)."""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import pickle
import sys
import time
import traceback
from collections.abc import Iterator
from typing import Any

from ._backend import Batch, BatchResult, ItemFailure, PackedValues, Parcel, packed
from ._errors import DriverInterrupt
from ._threadpools import one_thread_each

IN_WORKER = "RUNNERS_IN_WORKER"
BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                         "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def run_batch(batch: Batch, pack: bool = False) -> BatchResult:
    """Run one batch in the current process; stops at the first item that raises. Used by workers.

    `pack`: the result travels to another process (the driver), so pickle the values into a few
    pieces here (PackedValues); in-process back-ends (serial, threads) leave it off.
    """
    values: list[Any] = []
    error = None
    began = time.perf_counter()
    try:
        # The loop in C: list.extend keeps what it appended before an item raised, so the failing
        # item is at offset len(values). A Python loop here cost ~470 instructions per item.
        values.extend(map(batch.fn, batch.items))
    except BaseException as exc:  # noqa: BLE001 - SystemExit in an item is a task failure too
        if isinstance(exc, (KeyboardInterrupt, DriverInterrupt)) and _is_main_process():
            raise
        error = item_failure(batch, len(values), exc)
    seconds = time.perf_counter() - began
    if pack:
        values, error = _to_send_back(batch, values, error)
    return BatchResult.here(batch.id, values, error, seconds)


def item_failure(batch: Batch, offset: int, exc: BaseException) -> ItemFailure:
    """The failure of the batch's item at `offset`, which raised `exc`: a picklable exception (or a
    stand-in keeping its type and message) and the traceback as text, to travel to the driver."""
    return ItemFailure(batch.start + offset, batch.items[offset], portable_exception(exc),
                       "".join(traceback.format_exception(exc)))


def run_pickled_batch(parcel: Parcel) -> BatchResult:
    """`run_batch` for a batch the driver pickled (`pickle_batch`): unpickling happens here, where its
    errors are caught.

    Pools unpickle their arguments before user code runs, and an argument whose unpickling raises
    kills or wedges their workers; sending bytes turns it into the batch's own failure instead (with no
    index: the driver places it). The result goes back to the driver, so its values are packed.
    """
    try:
        unpickler = pickle.Unpickler(io.BytesIO(parcel.payload))
        if parcel.apart:
            unpickler.persistent_load = parcel.apart.__getitem__
        batch = unpickler.load()
    except BaseException as exc:  # noqa: BLE001 - whatever unpickling raises is this batch's failure
        failure = ItemFailure(None, None, portable_exception(exc),
                              "".join(traceback.format_exception(exc)) + "(while unpickling the batch)")
        return BatchResult.here(parcel.id, [], failure)
    return run_batch(batch, pack=True)


def _to_send_back(batch: Batch, values: list[Any],
                  error: ItemFailure | None) -> tuple[list[Any] | PackedValues, ItemFailure | None]:
    """`values` packed for the driver. The one rule for results on every back-end whose items run in
    other processes: a result must pickle with the standard pickle module. The first that does not
    is its item's failure, here, whatever the transport: pools that pickle refused such a result
    while those that use cloudpickle sent a lambda by value, or an open file as an empty StringIO."""
    sendable = packed(values)
    if isinstance(sendable, PackedValues) or not values:
        return sendable, error
    for offset, value in enumerate(values):
        try:
            pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 - any pickling failure: this value cannot go back
            refusal = RuntimeError(
                f"its result ({type(value).__name__}) cannot be pickled to send it back to the driver "
                f"({type(exc).__name__}: {exc}); return plain data: numbers, strings, containers, "
                "instances of classes defined at the top level of a module")
            failure = ItemFailure(batch.start + offset, batch.items[offset], refusal,
                                  "".join(traceback.format_exception(exc)))
            return packed(values[:offset]), failure
    return sendable, error  # pickled one by one, but not all at once (recursion depth): the transport's


def portable_exception(exc: BaseException) -> BaseException:
    """`exc` itself if it survives pickling, else a RuntimeError that keeps its type name and message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any failure to round-trip means: send a stand-in
        return RuntimeError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")


def _is_main_process() -> bool:
    # Ctrl-C (and SIGTERM, the run's time limit) must stop the driver (serial and thread back-ends run
    # items there); in a pool worker it is reported as the item's failure instead, so the pool learns of
    # it rather than losing a worker.
    return multiprocessing.parent_process() is None


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """`values` in os.environ for the block; what was there before (or its absence) afterwards."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def worker_environment() -> dict[str, str]:
    """The environment of a process that only runs items, for back-ends whose workers are started
    by someone else (a dask nanny, mpiexec): plan() there refuses to start a process pool (nested
    pools multiply processes), and BLAS/OpenMP use one thread (N workers x N threads on N cores)."""
    return {IN_WORKER: "1", **dict.fromkeys(BLAS_THREAD_VARIABLES, "1")}


def prepare_worker(poll_seconds: float = 0.5) -> None:
    """Initializer for pool worker processes: driver-only signal handling off, and die with the driver.

    A forked worker inherits the driver's Python signal handlers; it must not run them. Ctrl-C is the
    driver's to handle (it stops the workers), so workers ignore SIGINT. And Pool and
    ProcessPoolExecutor workers otherwise wait forever on a queue whose other end they hold
    themselves, living on as orphans after the driver is SIGKILLed: a thread watches the parent.
    """
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.environ.update(worker_environment())
    one_thread_each()  # BLAS and OpenMP runtimes, from the driver (fork) or the task's imports
    # Watch the driver itself, not os.getppid(): under forkserver the OS parent is the fork server,
    # and a driver that died before this ran has already left us reparented.
    known = multiprocessing.parent_process()
    driver = known.pid if known is not None else os.getppid()
    # A worker that finishes an item just after the driver died fails to send the result, and its
    # pool prints that BrokenPipeError's traceback on the stderr the user still reads: say nothing.
    sys.stderr = QuietOnceOrphaned(sys.stderr, driver)

    def watch() -> None:
        while True:
            time.sleep(poll_seconds)
            if _gone(driver):
                os._exit(1)

    threading.Thread(target=watch, name="runners-exit-with-parent", daemon=True).start()


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class QuietOnceOrphaned:
    """A worker's stderr that writes nothing once the worker's driver is gone."""

    def __init__(self, stream: Any, driver: int) -> None:
        self._stream = stream
        self._driver = driver

    def write(self, text: str) -> int:
        return len(text) if _gone(self._driver) else self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

