"""The back-end contract: start workers, run batches of items, hand back outcomes, shut down.

A back-end knows nothing of tasks, configs, retries or reports. The engine gives it an iterator of
`Batch`es; it pulls from that iterator as it has room (so the engine can size later batches from the
cost it observed), runs `run_batch` on each in a worker, and yields one `BatchResult` per batch as it
completes, in any order. Item errors travel inside the result; a lost worker is a `BatchResult` whose
`error` is a `WorkerLost`. Capabilities are plain class attributes, never extra methods.
"""

from __future__ import annotations

import abc
import multiprocessing
import os
import pickle
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Future, wait
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, ClassVar

from ._errors import DriverInterrupt, ItemTimeout, WorkerLost


@dataclass(frozen=True)
class NoOptions:
    """A back-end that takes no options."""


@dataclass(frozen=True)
class Batch:
    """Consecutive items `start`, `start + 1`, ... to run with `fn`; `id` is the engine's label."""

    id: int
    fn: Callable[[Any], Any]
    start: int
    items: Sequence[Any]  # a list, or a range when the task's items are one (tiny to send)
    timeout: float | None = None  # per item; honoured by back-ends with `enforces_timeout`

    @property
    def indices(self) -> range:
        """The indices of the batch's items in the run."""
        return range(self.start, self.start + len(self.items))


@dataclass(frozen=True)
class ItemFailure:
    """An item that raised: the exception (or a picklable stand-in) and the worker's traceback.

    `index` None: the batch failed before any item ran (it did not unpickle in the worker); the engine,
    which knows the batch, reports it against the batch's first item.
    """

    index: int | None
    item: Any
    exception: BaseException
    traceback: str


class PackedValues:
    """A batch's values pickled in pieces where they were computed (`run_batch(batch, pack=True)`).

    Many small values (ints, floats) cost a transport per object and take ~36 bytes each as Python
    objects; as a few bytes objects they travel at the cost of bytes and wait in the driver at ~5
    bytes each, and the engine unpickles one piece at a time as the task combines them. So the
    driver's memory for the batches it holds is what they take on the wire, and batches of cheap
    items can be large (fewer round trips) without the driver growing.
    """

    __slots__ = ("pieces", "count")

    def __init__(self, pieces: list[bytes], count: int) -> None:
        self.pieces = pieces
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Any]:
        for piece in self.pieces:
            yield from pickle.loads(piece)

    @property
    def nbytes(self) -> int:
        return sum(len(piece) for piece in self.pieces)


PIECE_VALUES = 8192  # values unpickled at a time in the driver


def packed(values: list[Any]) -> list[Any] | PackedValues:
    """`values` as PackedValues; as they are if one will not pickle (the transport may still manage,
    e.g. cloudpickle, or report it as it always has).

    Even a few values are packed: then a value that pickles here but cannot be unpickled in the
    driver (its class missing there) fails in the engine, as a clear error, on every back-end;
    left to the transports it hung a multiprocessing pool, and surfaced as a lost worker or a bare
    exception elsewhere.
    """
    if not values:  # a batch whose first item failed
        return values
    try:
        pieces = [pickle.dumps(values[i:i + PIECE_VALUES], pickle.HIGHEST_PROTOCOL)
                  for i in range(0, len(values), PIECE_VALUES)]
    except Exception:  # noqa: BLE001 - any value that does not pickle: leave them all to the transport
        return values
    return PackedValues(pieces, len(values))


@dataclass
class BatchResult:
    """What came back for one batch: values of the items that ran, and the error that stopped it."""

    batch_id: int
    values: list[Any] | PackedValues  # iterate or len() them; PackedValues from run_batch(pack=True)
    error: ItemFailure | WorkerLost | ItemTimeout | None = None
    host: str = ""
    pid: int = 0
    seconds: float = 0.0  # compute time inside the worker, for batch sizing
    node: str = ""  # the node that ran it, where a back-end knows better than the host name
    extra: dict[str, Any] = field(default_factory=dict)


def run_batch(batch: Batch, pack: bool = False) -> BatchResult:
    """Run one batch in the current process; stops at the first item that raises. Used by workers.

    `pack`: the result travels to another process (the driver), so pickle the values into a few
    pieces here (PackedValues); in-process back-ends (serial, threads) leave it off.
    """
    values: list[Any] = []
    error = None
    began = time.perf_counter()
    for offset, item in enumerate(batch.items):
        try:
            values.append(batch.fn(item))
        except BaseException as exc:  # noqa: BLE001 - SystemExit in an item is a task failure too
            if isinstance(exc, (KeyboardInterrupt, DriverInterrupt)) and _is_main_process():
                raise
            error = ItemFailure(batch.start + offset, item, portable_exception(exc),
                                "".join(traceback.format_exception(exc)))
            break
    seconds = time.perf_counter() - began
    host = socket.gethostname()
    if pack:
        values, error = _to_send_back(batch, values, error)
    return BatchResult(batch.id, values, error, host, os.getpid(), seconds, host)


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


def run_pickled_batch(batch_id: int, payload: bytes) -> BatchResult:
    """`run_batch` for a batch pickled by the driver: unpickling happens here, where errors are caught.

    Pools unpickle their arguments before user code runs, and an argument whose unpickling raises
    kills or wedges their workers; sending bytes turns it into the batch's own error instead. The
    result goes back to the driver, so its values are packed.
    """
    try:
        batch = pickle.loads(payload)
    except BaseException as exc:  # noqa: BLE001 - whatever unpickling raises is this batch's failure
        failure = ItemFailure(-1, None, portable_exception(exc),
                              "".join(traceback.format_exception(exc)) + "(while unpickling the batch)")
        return BatchResult(batch_id, [], failure, socket.gethostname(), os.getpid())
    return run_batch(batch, pack=True)


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


IN_WORKER = "RUNNERS_IN_WORKER"
BLAS_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                         "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), not all the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class Backend(abc.ABC):
    """Where items run. Subclasses set the class attributes and implement start, run and shutdown.

    Used as a context manager: `start()` on enter, `shutdown()` on exit, also after an error.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions  # a frozen dataclass; its fields are the back-end's options
    requires: ClassVar[tuple[str, ...]] = ()  # modules that must be importable to use it
    extra: ClassVar[str | None] = None  # the pip extra that installs them: runners[extra]
    separate_processes: ClassVar[bool] = False  # items run in other processes: fn and items must pickle
    distributed: ClassVar[bool] = False  # workers may be on other machines
    shares_memory: ClassVar[bool] = False  # workers see the driver's memory (no copies)
    runs_coroutines: ClassVar[bool] = False  # `fn` is the task's async function, not its plain one
    enforces_timeout: ClassVar[bool] = False  # stops a worker whose item outlives `Batch.timeout`
    # A smaller bound on a batch's bytes than the engine's ~1.5 MB. Read once start() has run, so a
    # back-end that hands batches to another (auto, joblib's Ray bridge) may set it there.
    max_batch_bytes: int | None = None

    def __init__(self, options: Any = None, workers: int | None = None) -> None:
        self.options = options if options is not None else self.Options()
        self.workers = workers or usable_cpus()

    @abc.abstractmethod
    def start(self) -> None:
        """Start the workers; called once before `run`."""

    @abc.abstractmethod
    def run(self, batches: Iterator[Batch]) -> Iterator[BatchResult]:
        """Run `batches` (pulled lazily, a bounded number in flight); yield each result as it completes."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Cancel what is pending and stop every worker; safe to call twice or after a failed start."""

    def __enter__(self) -> Backend:
        try:
            self.start()
        except BaseException:
            self.shutdown()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


def stream_futures(submit: Callable[[Batch], Future], batches: Iterator[Batch], in_flight: int,
                   backend: str) -> Iterator[BatchResult]:
    """`Backend.run` for any executor whose `submit` returns a `concurrent.futures.Future`.

    Keeps at most `in_flight` batches submitted, yields results as they complete, and cancels what is
    still pending when the consumer stops early (an error, or Ctrl-C).
    """
    pending: dict[Future, Batch] = {}
    try:
        for batch in islice(batches, in_flight):
            pending[submit(batch)] = batch
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                batch = pending.pop(future)
                yield future_outcome(future, batch, backend)
                following = next(batches, None)
                if following is not None:
                    pending[submit(following)] = following
    finally:
        for future in pending:
            future.cancel()


def future_outcome(future: Future, batch: Batch, backend: str) -> BatchResult:
    """The `BatchResult` a finished future holds, with transport failures turned into errors."""
    exc = future.exception()
    if exc is None:
        result = future.result()
        if isinstance(result.error, ItemFailure) and result.error.index == -1:  # from run_pickled_batch
            result.error = ItemFailure(batch.start, batch.items[0] if batch.items else None,
                                       result.error.exception, result.error.traceback)
        return result
    indices = list(range(batch.start, batch.start + len(batch.items)))
    if isinstance(exc, WorkerLost):
        exc.items = exc.items or indices
        return BatchResult(batch.id, [], exc)
    if isinstance(exc, ItemTimeout):
        return BatchResult(batch.id, [], exc)
    if isinstance(exc, BrokenExecutor):
        return BatchResult(batch.id, [], WorkerLost(f"the pool broke ({exc})", backend, indices))
    # Not raised by an item (those are caught in run_batch): sending the batch or its result failed.
    index = first_unpicklable(batch)
    item = batch.items[index - batch.start] if index is not None else None
    where = (f"item {index} ({type(item).__name__}) cannot be pickled to send it to a worker"
             if index is not None else "the batch or its result could not travel between processes")
    error = RuntimeError(f"{where}: {type(exc).__name__}: {exc}")
    failure = ItemFailure(batch.start if index is None else index, item, error,
                          "".join(traceback.format_exception(exc)))
    return BatchResult(batch.id, [], failure)


def first_unpicklable(batch: Batch) -> int | None:
    """The index of the first item of `batch` that does not pickle, if any."""
    for offset, item in enumerate(batch.items):
        try:
            pickle.dumps(item)
        except Exception:  # noqa: BLE001 - any pickling failure counts
            return batch.start + offset
    return None


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
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # libraries already loaded (numpy via fork or the parent's imports)
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
