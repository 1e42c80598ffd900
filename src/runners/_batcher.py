"""Cutting a task's items into batches on demand, each sized from the cost measured so far."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator, Sequence, Sized
from itertools import islice
from typing import Any

from ._backend import Batch, BatchResult, PackedValues

TARGET_BATCH_SECONDS = 0.1  # long enough to hide a round trip (0.5-30 ms), short enough to balance
MIN_BATCH_SECONDS = 0.01  # tail batches shrink for balance, but not below this much work
# ... nor below this many times what a batch costs beyond its work, as measured: ~0.5 ms on a
# process pool, but ~5 ms on Ray, ~10 ms on joblib (its results are polled every 10 ms) and ~30 ms on
# dask (its scheduler runs in the driver), where 10-ms batches would cost more than they balance.
# It only stops the shrinking, and no batch exceeds TARGET_BATCH_SECONDS: a back-end that returns a
# window of batches at once, or a first batch that waited for a worker to start, can make every round
# trip look dear.
OVERHEAD_MULTIPLE = 2
# A back-end that runs batches in rounds (Backend.runs_in_rounds): a run's items go in at least this
# many rounds after the first, as the rule of thumb `len // (workers * 4)` cuts them, so that the
# driver's work on a round's values overlaps the next round and only the last round's is left to wait
MIN_ROUNDS = 4
# ... and no batch longer than this: it bounds what a lost rank takes, and how often progress moves.
# Not 0.1 s: the first measure, from one-item batches, is a cold call's, which overstates a tiny
# item's cost 30-70x (5-12 us for a 0.17-us `x + 1`), and would cut the first rounds that much shorter.
ROUND_BATCH_SECONDS = 2.0
# What one batch's items and values may take in the driver (estimated), whatever their count: with
# 2 x workers batches in flight this bounds the driver's memory. Small ints then come ~150,000 to a
# batch when packed (PackedValues: ~5 bytes each), ~22,000 when not, and 100 KB values 7 at a time;
# a fixed item count held 20,000 x 100 KB values as easily. The driver's peak grows by about five
# budgets on a long run (batches in flight, arriving and being combined): 1.5 MiB grew a 25-MB
# driver 1.3x from 100,000 to 10,000,000 tiny items; this budget ~1.15x, for ~8% more round trips.
MAX_BATCH_BYTES = 768 * 1024
# What a packed piece's pickle adds to its values (protocol, frame, list, stop): 17 bytes for [5],
# 2,760 for range(1000). Counted as the values', it made one small int look like 17 bytes, and the
# first batches after a one-item batch 6x smaller than the budget allows.
PICKLE_FRAMING = 15


class Batcher:
    """Cuts items into batches on demand, sizing each from the item cost measured so far.

    Like joblib's auto batching: start with one item, then aim for batches of TARGET_BATCH_SECONDS,
    and shrink towards the end so that the last batches spread over all workers, but not below a
    few times what a round trip costs beyond the work (measured: the back-end's own overhead).
    Whatever their cost, batches hold at most `max_bytes` of items and values (measured on samples,
    or on the packed values as they wait in the driver).

    `rounds`: the back-end deals batches in rounds, one to each worker in turn
    (`Backend.runs_in_rounds`): a round's batches are cut alike, and the items into a few whole rounds.
    """

    def __init__(self, items: Sequence[Any] | Iterable[Any], fn: Any, workers: int,
                 chunksize: int | None, timeout: float | None = None,
                 max_bytes: int = MAX_BATCH_BYTES, rounds: bool = False) -> None:
        self.items = items
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.fn = fn
        self.workers = workers
        self.chunksize = chunksize
        self.rounds = rounds
        self.round_size: int | None = None  # in rounds: the size of every batch of the current one
        self.total = len(items) if isinstance(items, Sized) else None
        self.issued = 0
        self.count = 0
        self.measured = (0.0, 0.0)  # seconds and items of the batches seen, older ones halved each time
        self.overhead: float | None = None  # the least a batch took beyond its work (round trip - work)
        self.item_bytes = 0  # a range slice is a few bytes however long: its items cost nothing here
        self.value_bytes = 0

    def __iter__(self) -> Iterator[Batch]:
        sequence = self.items if isinstance(self.items, Sequence) else None
        stream = None if sequence is not None else iter(self.items)
        broken: Exception | None = None  # what the stream raised, raised once the items before it went
        while True:
            if broken is not None:
                raise broken
            size = self.next_size()
            if isinstance(sequence, range):
                chunk: Sequence[Any] = sequence[self.issued:self.issued + size]  # a range: pickles in bytes
            elif sequence is not None:
                chunk = list(sequence[self.issued:self.issued + size])
            else:
                chunk = []
                try:
                    chunk.extend(islice(stream, size))  # keeps what came before an error
                except Exception as exc:  # noqa: BLE001 - the caller's iterable: its error, after its items
                    if not chunk:
                        raise
                    broken = exc
            if not chunk:
                return
            if not isinstance(chunk, range):
                self.item_bytes = sampled_bytes(chunk)  # the latest: one big item must not pin sizes at 1
            batch = Batch(self.count, self.fn, self.issued, chunk, self.timeout)
            self.issued += len(chunk)  # counted as it is handed out, even if no more is asked for
            self.count += 1
            yield batch

    def observe(self, result: BatchResult, round_trip: float) -> None:
        """Learn from a finished batch, which took `round_trip` seconds from hand-over to result."""
        values = result.values
        if values:  # what waits in the driver (pickled pieces, or objects): the latest, not the largest
            packed = isinstance(values, PackedValues)
            self.value_bytes = (max(values.nbytes - PICKLE_FRAMING * len(values.pieces), 0) // len(values) + 1
                                if packed else sampled_bytes(values))
        if result.values and result.seconds > 0:
            # Weighted by items: the first one-item batches, whose seconds are mostly the timer's and
            # the call's, must not hold the estimate up while batches of thousands come back.
            seconds, items = self.measured
            self.measured = (0.5 * seconds + result.seconds, 0.5 * items + len(result.values))
        # The least, not an average: a batch that waited behind another in a worker did not cost more.
        beyond = max(round_trip - result.seconds, 0.0)
        self.overhead = beyond if self.overhead is None else min(self.overhead, beyond)

    @property
    def item_seconds(self) -> float | None:
        """What an item costs, as measured so far; None before the first batch with values."""
        seconds, items = self.measured
        return seconds / items if items else None

    def next_size(self) -> int:
        if self.chunksize is not None:
            return self.chunksize
        measured = self.item_seconds
        if self.rounds:
            if not self.count % self.workers:  # a new round: its first batch's size is every batch's
                self.round_size = 1 if measured is None else self._round_size(measured)
            return self.round_size or 1
        if measured is None:
            return self._unmeasured_size()
        cost = max(measured, 1e-9)
        least = max(MIN_BATCH_SECONDS, OVERHEAD_MULTIPLE * (self.overhead or 0.0))
        size = int(TARGET_BATCH_SECONDS / cost)  # `least` only stops the shrinking: never above this
        if self.total is not None:
            remaining = self.total - self.issued
            balanced = max(math.ceil(remaining / (2 * self.workers)), int(least / cost))
            size = min(size, balanced)
        return max(1, min(size, self._most()))

    def _unmeasured_size(self) -> int:
        """Before any batch has come back: one item each for the first 2 x workers batches (what the
        engine's in-flight loop hands out before a result), then doubling, up to the rule of thumb
        `len // (workers * 4)`. More batches than that with nothing back means the back-end asks for
        work faster than its results reach the engine, so the items are cheap beside that lag:
        joblib's dispatch thread runs ahead of its result loop, which polls every 10 ms, and 26-30
        one-item batches of tiny went out before the first result, then batches sized from those
        cold one-item calls (12x an item's cost)."""
        beyond = self.count - 2 * self.workers
        if beyond < 0 or self.total is None:
            return 1
        rule = rule_of_thumb(self.total, self.workers)
        return max(1, min(2 ** min(beyond + 1, 40), rule, self._most()))

    def _most(self) -> int:
        """The most items a batch may hold for its bytes."""
        return self.max_bytes // max(self.item_bytes + self.value_bytes, 1)

    def _round_size(self, measured: float) -> int:
        """In rounds, the size of each batch of the round that starts now: a smaller one than the
        round's largest balances nothing, since the dealing fixes each worker's share. Equal batches
        balance a round by themselves, so the target that keeps a pool's batches short enough to
        balance does not apply: a batch holds what cuts the items into MIN_ROUNDS rounds, within the
        byte budget and ROUND_BATCH_SECONDS, and the items left are shared out into whole rounds (a
        shrinking tail would only add rounds, each with its batches' costs)."""
        size = min(int(ROUND_BATCH_SECONDS / max(measured, 1e-9)), self._most())
        if self.total is not None:
            size = min(size, math.ceil(self.total / (self.workers * MIN_ROUNDS)))
            remaining = self.total - self.issued
            if remaining > 0 and size > 0:
                rounds = math.ceil(remaining / (self.workers * size))
                size = math.ceil(remaining / (self.workers * rounds))
        return max(1, size)


def rule_of_thumb(items: int, workers: int) -> int:
    """The document's chunksize for `items` on `workers`: `len // (workers * 4)`, at least 1."""
    return max(1, items // (workers * 4))


def sampled_bytes(values: Sequence[Any], samples: int = 5) -> int:
    """Bytes per element of `values` in memory, from up to `samples` elements spread over it, plus
    its slot in the list. An estimate, for sizing batches, not an account."""
    step = max(1, len(values) // samples)
    picked = [values[i] for i in range(0, len(values), step)][:samples]
    return max(_footprint(value) for value in picked) + 8


ATOMS = (str, bytes, bytearray, int, float, complex, bool, type(None))


def _footprint(value: Any, depth: int = 3) -> int:
    """`value`'s size and, a few levels down, that of what it holds (container elements, dict entries,
    an object's attributes), each level from up to 16 samples. Anything odd counts as 64 bytes: a
    user's object may raise from __sizeof__ or from an attribute lookup, and sizing must not fail."""
    try:
        numpy = sys.modules.get("numpy")  # not imported here: no numpy loaded, no arrays to size
        if numpy is not None and isinstance(value, numpy.ndarray):
            return max(sys.getsizeof(value), value.nbytes)  # a view's getsizeof leaves out the data
        size = sys.getsizeof(value)
        if depth == 0 or isinstance(value, ATOMS):
            return size
        if isinstance(value, dict):
            inner, count = [x for pair in islice(value.items(), 16) for x in pair], 2 * len(value)
        elif isinstance(value, tuple | list | set | frozenset):
            inner, count = list(islice(value, 16)), len(value)
        elif isinstance(getattr(value, "__dict__", None), dict):
            inner, count = list(islice(vars(value).values(), 16)), len(vars(value))
        else:
            return size
        held = sum(_footprint(v, depth - 1) for v in inner)
        return size + held * count // max(len(inner), 1)
    except Exception:  # noqa: BLE001 - see the docstring
        return 64
