"""Pure-Python arithmetic per item, with an async twin that never awaits: CPU-bound work for asyncio.

The async function exists to show that an event loop does not run CPU-bound coroutines in parallel:
each one holds the loop until it returns.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from runners import Task, Verdict, param


@dataclass(frozen=True)
class BurnParams:
    n: int = param(40, min=0, max=10**7, help="number of items")
    work: int = param(300_000, min=1, max=10**9, help="squares summed per item")


def split(params: BurnParams, seed: int) -> list[int]:
    return [params.work] * params.n


def sum_squares(work: int) -> int:
    total = 0
    for k in range(work):
        total += k * k
    return total


async def sum_squares_async(work: int) -> int:
    return sum_squares(work)  # no await: the loop is blocked for the whole item, as CPU work does


def combine(values: Iterator[int], params: BurnParams) -> int:
    return sum(values)


def check(total: int, params: BurnParams) -> Verdict:
    w = params.work
    expected = params.n * (w - 1) * w * (2 * w - 1) // 6
    return Verdict(total == expected, f"n * (w-1)w(2w-1)/6 = {expected}")


TASK = Task("burn", BurnParams, split, sum_squares, combine, check, run_async=sum_squares_async,
            description="pure-Python sums of squares, with an async twin: CPU-bound")
