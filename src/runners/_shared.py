"""Large arrays for every worker without a copy per item: numpy arrays in POSIX shared memory.

`SharedArray.create(array)` copies the array once into a segment named `runners-<pid>-<token>`. The
handle pickles to (name, shape, dtype), so an item that holds it travels in bytes, and a worker maps the
segment on first use (once per process). Only the creator unlinks: when its `with` block ends (also
after an error), when the handle is garbage, or at interpreter exit. A creator killed outright cannot
unlink; the next `create` in any process sweeps segments whose creator pid is dead.

Workers map the segment's file under /dev/shm read-only instead of opening a `SharedMemory`: on
Python < 3.13 opening one registers it with the worker's resource tracker, which unlinks it when that
worker ends, taking the segment from the other workers.
"""

from __future__ import annotations

import os
import re
import secrets
import weakref
from collections import OrderedDict
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from ._scratch import dead_owners

PREFIX = "runners-"
SHM_DIR = "/dev/shm"
_CACHE_SIZE = 4  # attachments a worker keeps (a warm pool sees one array per run)
# One per process by nature: a mapping belongs to the process that made it. Kept small (see above).
_attached: OrderedDict[str, np.ndarray] = OrderedDict()


class SharedArray:
    """A numpy array in shared memory; its pickle is its name, so it costs bytes to send.

    Use `with SharedArray.create(array) as shared:` and put `shared` in items; read `shared.array`
    (read-only in workers). Or `SharedArray.empty(shape, dtype)` and fill `.array` in place first.
    """

    def __init__(self, name: str, shape: tuple[int, ...], dtype: str) -> None:
        self.name, self.shape, self.dtype = name, tuple(shape), np.dtype(dtype)
        self._segment: shared_memory.SharedMemory | None = None  # set in the creator only
        self._array: np.ndarray | None = None
        self._finalizer: weakref.finalize | None = None

    @classmethod
    def create(cls, array: Any) -> SharedArray:
        """Copy `array` once into a new segment owned by this process (stale segments swept first)."""
        source = np.asarray(array)
        shared = cls.empty(source.shape, source.dtype)
        try:
            shared.array[...] = source
        except BaseException:
            shared.unlink()
            raise
        shared.array.flags.writeable = False
        return shared

    @classmethod
    def empty(cls, shape: int | tuple[int, ...], dtype: Any = np.float64) -> SharedArray:
        """A new uninitialised segment to fill in place through `.array` (writable in the creator
        only): no second copy of a large array in the driver."""
        sweep()
        dtype = np.dtype(dtype)
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        name = f"{PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
        nbytes = int(np.prod(shape)) * dtype.itemsize
        segment = shared_memory.SharedMemory(name, create=True, size=max(nbytes, 1))
        shared = cls(name, shape, dtype.str)
        shared._segment = segment
        shared._finalizer = weakref.finalize(shared, _release, segment)  # also runs at exit
        shared._array = np.ndarray(shape, dtype, buffer=segment.buf)
        return shared

    @property
    def array(self) -> np.ndarray:
        """The array: the creator's own view, or this process's mapping of the segment (made once)."""
        if self._array is None:
            self._array = _attach(self.name, self.shape, self.dtype)
        return self._array

    @property
    def owner(self) -> bool:
        return self._segment is not None

    def unlink(self) -> None:
        """Remove the segment (creator only; idempotent). Workers that mapped it keep their mapping."""
        self._array = None
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> SharedArray:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.unlink()

    def __reduce__(self) -> tuple[Any, ...]:
        return (SharedArray, (self.name, self.shape, self.dtype.str))

    def __repr__(self) -> str:
        return f"SharedArray({self.name!r}, shape={self.shape}, dtype={self.dtype.str!r})"


def _release(segment: shared_memory.SharedMemory) -> None:
    try:
        segment.close()
    except BufferError:  # a view is still exported; the mapping goes with the process
        pass
    try:
        segment.unlink()
    except FileNotFoundError:
        pass


def _attach(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    array = _attached.get(name)
    if array is None:
        path = os.path.join(SHM_DIR, name)
        if not os.path.exists(path):
            raise FileNotFoundError(f"shared array {name!r} is gone: its creator unlinked it or ended")
        if int(np.prod(shape)) == 0:
            array = np.empty(shape, dtype)
        else:
            array = np.memmap(path, dtype=dtype, mode="r", shape=shape)
        _attached[name] = array
        while len(_attached) > _CACHE_SIZE:
            _attached.popitem(last=False)
    else:
        _attached.move_to_end(name)
    return array


def sweep() -> list[str]:
    """Unlink `runners-<pid>-*` segments whose creating process is gone; returns their names."""
    removed = []
    for name in dead_owners(SHM_DIR, re.compile(rf"{re.escape(PREFIX)}(\d+)-")):
        try:
            os.unlink(os.path.join(SHM_DIR, name))
            removed.append(name)
        except OSError:
            pass
    return removed
