"""x + 1 over n items: the document's start-up overhead case, where parallelism loses."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from runners import Task, Verdict, param


@dataclass(frozen=True)
class TinyParams:
    n: int = param(100, min=0, max=10**10, help="number of items (0..n-1)")


def split(params: TinyParams, seed: int) -> range:
    return range(params.n)


def add_one(x: int) -> int:
    return x + 1


def combine(values: Iterator[int], params: TinyParams) -> int:
    return sum(values)


def check(total: int, params: TinyParams) -> Verdict:
    expected = params.n * (params.n + 1) // 2
    return Verdict(total == expected, f"sum of 1..n = n(n+1)/2 = {expected}")


TASK = Task("tiny", TinyParams, split, add_one, combine, check,
            description="x + 1 per item: pure overhead")
