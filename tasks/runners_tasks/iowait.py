"""Items that wait (like a network call) without using the CPU: where threads and asyncio shine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

from runners import Task, Verdict, param


@dataclass(frozen=True)
class IowaitParams:
    n: int = param(40, min=0, max=10**7, help="number of items")
    seconds: float = param(0.05, min=0, max=3600, help="how long each item waits")


def split(params: IowaitParams, seed: int) -> list[tuple[int, float]]:
    return [(i, params.seconds) for i in range(params.n)]


def wait_then_echo(item: tuple[int, float]) -> int:
    index, seconds = item
    time.sleep(seconds)
    return index


async def wait_then_echo_async(item: tuple[int, float]) -> int:
    index, seconds = item
    await asyncio.sleep(seconds)
    return index


def combine(indices: Iterator[int], params: IowaitParams) -> int:
    return sum(indices)


def check(total: int, params: IowaitParams) -> Verdict:
    expected = params.n * (params.n - 1) // 2
    return Verdict(total == expected, f"every index came back once: sum = {expected}")


TASK = Task("iowait", IowaitParams, split, wait_then_echo, combine, check,
            run_async=wait_then_echo_async, description="sleep per item: I/O-bound, no CPU")
