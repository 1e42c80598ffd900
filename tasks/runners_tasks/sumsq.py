"""Sum of squares of 0..n-1, split in parts: the document's Process + Queue example."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from runners import Task, Verdict, param


@dataclass(frozen=True)
class SumsqParams:
    n: int = param(1_000_000, min=0, max=10**12, help="sum i*i for i in 0..n-1")
    parts: int = param(10, min=1, help="number of items the range is cut into")


def split(params: SumsqParams, seed: int) -> list[tuple[int, int]]:
    bounds = [params.n * k // params.parts for k in range(params.parts + 1)]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


def sum_squares(bounds: tuple[int, int]) -> int:
    start, stop = bounds
    return sum(i * i for i in range(start, stop))


def combine(partials: Iterator[int], params: SumsqParams) -> int:
    return sum(partials)


def check(total: int, params: SumsqParams) -> Verdict:
    n = params.n
    expected = (n - 1) * n * (2 * n - 1) // 6
    return Verdict(total == expected, f"closed form (n-1)n(2n-1)/6 = {expected}")


TASK = Task("sumsq", SumsqParams, split, sum_squares, combine, check,
            description="sum of squares in parts: CPU-bound, few items")
