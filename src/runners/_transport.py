"""The one transport path of the back-ends whose items run in other processes: each batch is pickled in
the driver (`pickle_batch`), unpickled where it runs (`run_pickled_batch`), and whatever keeps a batch
or its result from making the trip becomes that batch's outcome (`transport_failure`)."""

from __future__ import annotations

import io
import pickle
import traceback
from collections.abc import Callable
from concurrent.futures import BrokenExecutor
from typing import Any

from ._backend import Batch, BatchResult, ItemFailure, Parcel
from ._errors import ItemTimeout, WorkerLost


class BatchNotPicklable(Exception):
    """An item of the batch cannot be pickled to send it to a worker (raised by `pickle_batch`)."""

    def __init__(self, index: int, item: Any, cause: BaseException) -> None:
        super().__init__(f"item {index} ({type(item).__name__}) cannot be pickled to send it to a worker: "
                         f"{type(cause).__name__}: {cause}")
        self.index = index
        self.item = item


def pickle_batch(batch: Batch, pickler: type[pickle.Pickler] = pickle.Pickler,
                 apart: Callable[[Any], bool] | None = None) -> Parcel:
    """`batch` as a Parcel for `run_pickled_batch`, pickled by `pickler` (cloudpickle's sends functions
    by value); objects for which `apart` is true travel beside the bytes (`Parcel.apart`), each once.

    Raises BatchNotPicklable, naming the first item that does not pickle, if the batch does not.
    """
    buffer = io.BytesIO()
    kept: list[Any] = []
    writer = pickler(buffer, pickle.HIGHEST_PROTOCOL)
    if apart is not None:
        seen: dict[int, int] = {}  # an object met twice travels once, and is one object again on arrival

        def set_apart(obj: Any) -> int | None:
            if not apart(obj):
                return None
            if id(obj) not in seen:
                seen[id(obj)] = len(kept)
                kept.append(obj)
            return seen[id(obj)]

        writer.persistent_id = set_apart  # type: ignore[method-assign]
    try:
        writer.dump(batch)
    except Exception as exc:  # noqa: BLE001 - pickling raises many types; all mean the same here
        index = _first_unpicklable(batch, pickler)
        if index is None:
            raise
        raise BatchNotPicklable(index, batch.items[index - batch.start], exc) from exc
    return Parcel(batch.id, buffer.getvalue(), tuple(kept))


def _first_unpicklable(batch: Batch, pickler: type[pickle.Pickler]) -> int | None:
    for offset, item in enumerate(batch.items):
        try:
            pickler(io.BytesIO(), pickle.HIGHEST_PROTOCOL).dump(item)
        except Exception:  # noqa: BLE001 - any pickling failure counts
            return batch.start + offset
    return None


def transport_failure(batch: Batch | Parcel, exc: BaseException, backend: str) -> BatchResult:
    """The outcome of a batch that raised `exc` on its way rather than coming back with a result (the
    items' own errors travel inside results): a lost worker, a timeout, a broken pool, or the batch or
    its result failing to travel. The engine places what names no items: the batch's first, or all."""
    if isinstance(exc, WorkerLost | ItemTimeout):
        return BatchResult(batch.id, [], exc)
    if isinstance(exc, BrokenExecutor):
        # a broken pool fails every batch in flight, and cannot say which the dead worker held
        return BatchResult(batch.id, [], WorkerLost(f"the pool broke ({exc})", backend, exact=False))
    if isinstance(exc, BatchNotPicklable):
        failure = ItemFailure(exc.index, exc.item, RuntimeError(str(exc)),
                              "".join(traceback.format_exception(exc.__cause__ or exc)))
        return BatchResult(batch.id, [], failure)
    error = RuntimeError(f"the batch or its result could not travel between processes: "
                         f"{type(exc).__name__}: {exc}")
    return BatchResult(batch.id, [], ItemFailure(None, None, error, "".join(traceback.format_exception(exc))))
