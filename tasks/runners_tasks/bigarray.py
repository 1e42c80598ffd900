"""Sums of slices of one large array that every worker reads: the large-data case.

With `share: shm` (the default) the array is copied once into shared memory and each item carries a
`SharedArray` handle (a few bytes); with `share: pickle` each item carries the array itself, which is
what happens without help. The array holds 0, 1, 2, ... so every slice sum has a closed form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from runners import SharedArray, Task, Verdict, param


@dataclass(frozen=True)
class BigArrayParams:
    megabytes: float = param(500, min=0.001, max=65536, help="size of the float64 array")
    items: int = param(16, min=1, max=10**6, help="slices of the array summed, one per item")
    share: Literal["shm", "pickle"] = param("shm", help="shared memory, or the array pickled into every item")


def length(params: BigArrayParams) -> int:
    return int(params.megabytes * 2**20) // 8


def split(params: BigArrayParams, seed: int) -> list[tuple[Any, int, int]]:
    """One item per slice; each refers to the whole array (the handle or the array itself)."""
    n = length(params)
    if params.share == "shm":
        # Filled in place, so the driver never holds a second copy. The items hold the creator's
        # handle: the segment is unlinked when they are dropped after the run, however it ended.
        source = SharedArray.empty(n, np.float64)
        for start in range(0, n, 1 << 22):
            stop = min(n, start + (1 << 22))
            source.array[start:stop] = np.arange(start, stop, dtype=np.float64)
    else:
        source = np.arange(n, dtype=np.float64)
    bounds = np.linspace(0, n, params.items + 1).astype(np.int64)
    return [(source, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def slice_sum(item: tuple[Any, int, int]) -> float:
    source, start, stop = item
    array = source.array if isinstance(source, SharedArray) else source
    return float(array[start:stop].sum())


def combine(sums: Any, params: BigArrayParams) -> list[float]:
    return list(sums)


def check(sums: list[float], params: BigArrayParams) -> Verdict:
    """Each slice [a, b) of 0, 1, 2, ... sums to (a + b - 1) * (b - a) / 2 (exact in float64 here)."""
    bounds = np.linspace(0, length(params), params.items + 1).astype(np.int64)
    pairs = zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
    expected = [(a + b - 1) * (b - a) / 2 for a, b in pairs]
    bad = [i for i, (got, want) in enumerate(zip(sums, expected, strict=False)) if got != want]
    ok = len(sums) == len(expected) and not bad
    return Verdict(ok, f"{len(sums)} slice sums equal the closed form" if ok
                   else f"slices {bad[:5]} differ from the closed form (a + b - 1)(b - a) / 2")


TASK = Task("bigarray", BigArrayParams, split, slice_sum, combine, check,
            description="slice sums of one large shared array: zero-copy data for every worker")
