"""The back-end contract: start workers, run batches of items, hand back outcomes, shut down.

A back-end knows nothing of tasks, configs, retries or reports. The engine gives it an iterator of
`Batch`es; it pulls from that iterator as it has room (so the engine can size later batches from the
cost it observed), runs `run_batch` on each in a worker, and yields one `BatchResult` per batch as it
completes, in any order. Item errors travel inside the result; a lost worker is a `BatchResult` whose
`error` is a `WorkerLost`. Capabilities and guarantees are plain class attributes, never extra methods.
"""

from __future__ import annotations

import abc
import contextlib
import os
import pickle
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ._errors import ItemTimeout, WorkerLost


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
class Parcel:
    """A batch pickled in the driver (`pickle_batch`), unpickled only where it runs (`run_pickled_batch`).

    `apart`: objects kept out of `payload` and sent beside it, for a transport that treats them
    better than bytes (joblib memory-maps large numpy arrays).
    """

    id: int
    payload: bytes
    apart: tuple[Any, ...] = ()


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
    # A WorkerLost that names no items lost the whole batch (not `exact`: every batch in flight): the
    # engine fills them in.
    error: ItemFailure | WorkerLost | ItemTimeout | None = None
    host: str = ""
    pid: int = 0
    seconds: float = 0.0  # compute time inside the worker, for batch sizing
    node: str = ""  # the node that ran it, where a back-end knows better than the host name
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def here(cls, batch_id: int, values: list[Any] | PackedValues, error: ItemFailure | None = None,
             seconds: float = 0.0) -> BatchResult:
        """A result computed in this process, which it names as host and pid."""
        host = socket.gethostname()
        return cls(batch_id, values, error, host, os.getpid(), seconds, host)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), not all the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# What a WorkerLost names when a worker dies (`Backend.lost_items`).
LOST_ITEMS = ("exact", "batch", "in flight")


class Backend(abc.ABC):
    """Where items run. A subclass sets the class attributes below and implements `start` and `run`.

    Used as a context manager: `start()` on enter, `shutdown()` on exit, also after an error. `start`
    registers the cleanup of each resource as it makes it (`self.on_shutdown(pool.terminate)`), and
    `shutdown` runs them newest first, each once, whatever happened: a start that failed half-way
    leaves exactly what it made to stop.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions  # a frozen dataclass; its fields are the back-end's options
    requires: ClassVar[tuple[str, ...]] = ()  # modules that must be importable to use it
    install: ClassVar[str | None] = None  # how to install them, e.g. "pip install 'runners[ray]'"

    # -- What it can do ----------------------------------------------------------------------------
    separate_processes: ClassVar[bool] = False  # items may run in processes that this run starts
    pickles_items: ClassVar[bool] = False  # fn and items are pickled to reach workers: the engine
    # checks that the task's function pickles before anything starts
    distributed: ClassVar[bool] = False  # workers may be on other machines
    shares_memory: ClassVar[bool] = False  # workers see the driver's memory (no copies)
    runs_coroutines: ClassVar[bool] = False  # `fn` is the task's async function, not its plain one
    enforces_timeout: ClassVar[bool] = False  # stops a worker whose item outlives `Batch.timeout`
    # A smaller bound on a batch's bytes than the engine's 768 KiB. Read once start() has run, so a
    # back-end that hands batches to another (auto, joblib's Ray bridge) may set it there.
    max_batch_bytes: int | None = None
    # True: it deals batches in rounds, one to each worker in turn (mpi's spmd scheme: batch i of a
    # round to rank i), where a pool hands the next batch to whichever worker is free. Each worker's
    # share is then fixed by the dealing: a smaller batch balances nothing (its worker only idles
    # sooner) and an extra round adds its batches' costs, so the engine cuts each round's batches
    # alike and the last items into whole rounds instead of a shrinking tail. Read once start() has
    # run, like max_batch_bytes (a back-end may set it by its options).
    runs_in_rounds: bool = False

    # -- What it guarantees when things go wrong: runners.testing.BackendSuite checks each ----------
    # What a WorkerLost names when a worker dies: "exact", the items the dead worker held and no
    # other; "batch", the items of each batch it took with it; "in flight", every item in flight,
    # since it cannot tell which the dead worker held (the error says "one or more of items").
    # None: items run in the driver's own process, where an item that kills its process (a signal,
    # os._exit) ends the run itself.
    lost_items: ClassVar[str | None] = None
    names_signal: ClassVar[bool] = False  # a WorkerLost says how the worker ended: SIGKILL, EXIT(0)
    stops_running_items: ClassVar[bool] = True  # fail-fast, Ctrl-C and run_timeout stop running items
    items_by_value: ClassVar[bool] = False  # items travel by cloudpickle: a lambda as an item goes
    startup_seconds: ClassVar[float] = 10.0  # start plus shut-down, at most, on a busy 2-core machine

    def __init__(self, options: Any = None, workers: int | None = None) -> None:
        self.options = options if options is not None else self.Options()
        self.workers = workers or usable_cpus()
        self._cleanups = contextlib.ExitStack()

    @abc.abstractmethod
    def start(self) -> None:
        """Start the workers; called once before `run`. Register each resource's cleanup as it is made."""

    @abc.abstractmethod
    def run(self, batches: Iterator[Batch]) -> Iterator[BatchResult]:
        """Run `batches` (pulled lazily, a bounded number in flight); yield each result as it completes."""

    def on_shutdown(self, cleanup: Callable[..., Any], /, *args: Any, **kwargs: Any) -> None:
        """Have `shutdown` call `cleanup(*args, **kwargs)`: after the cleanups registered later, once."""
        self._cleanups.callback(cleanup, *args, **kwargs)

    def shutdown(self) -> None:
        """Cancel what is pending and stop every worker: the registered cleanups, newest first. Each
        runs even if one before it raised (which is raised at the end); safe to call twice."""
        self._cleanups.close()

    def __enter__(self) -> Backend:
        try:
            self.start()
        except BaseException:
            self.shutdown()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()
