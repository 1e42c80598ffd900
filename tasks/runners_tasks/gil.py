"""The document's GIL demonstration: threads incrementing one shared counter without a lock.

`counter += 1` is a read, an add and a write; whether two threads lose updates depends on where the
interpreter may switch threads (and on free-threaded builds, on there being no GIL at all). The task
reports what this interpreter actually does: the counter value and the time, beside one thread doing
the same total number of increments.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from runners import Task, Verdict, param


@dataclass(frozen=True)
class GilParams:
    increments: int = param(10_000_000, min=1, max=10**10, help="increments per thread (the document: 10**7)")
    threads: int = param(2, min=2, max=64, help="threads sharing the counter (the document: 2)")


class Counter:
    """A plain attribute, so `+=` is the same unsynchronised read-modify-write as the document's global."""

    def __init__(self) -> None:
        self.value = 0


def split(params: GilParams, seed: int) -> list[tuple[str, int, int]]:
    total = params.threads * params.increments
    return [("one thread", 1, total), (f"{params.threads} threads", params.threads, params.increments)]


def count_up(counter: Counter, times: int) -> None:
    for _ in range(times):
        counter.value += 1


def race(item: tuple[str, int, int]) -> dict[str, Any]:
    """Run `threads` threads, each adding 1 `per_thread` times to one counter; time it."""
    mode, threads, per_thread = item
    counter = Counter()
    workers = [threading.Thread(target=count_up, args=(counter, per_thread)) for _ in range(threads)]
    began = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    seconds = time.perf_counter() - began
    expected = threads * per_thread
    return {"mode": mode, "threads": threads, "expected": expected, "counter": counter.value,
            "lost": expected - counter.value, "seconds": round(seconds, 4), "gil": gil_enabled()}


def gil_enabled() -> bool:
    check = getattr(sys, "_is_gil_enabled", None)  # Python 3.13+; older builds always have the GIL
    return True if check is None else bool(check())


def combine(rows: Iterator[dict[str, Any]], params: GilParams) -> list[dict[str, Any]]:
    return list(rows)


def check(rows: list[dict[str, Any]], params: GilParams) -> Verdict:
    """One thread must count exactly; shared counters may lose updates but never gain any."""
    single, shared = rows
    if single["counter"] != single["expected"]:
        return Verdict(False, f"one thread counted {single['counter']}, not {single['expected']}")
    if not 0 < shared["counter"] <= shared["expected"]:
        return Verdict(False, f"{shared['mode']} counted {shared['counter']} of {shared['expected']}")
    return Verdict(True, f"one thread counts exactly {single['expected']}; {shared['mode']} counted "
                         f"{shared['counter']} ({shared['lost']} updates lost)")


TASK = Task("gil", GilParams, split, race, combine, check,
            description="threads += 1 on one counter: the value and time this interpreter gives")
