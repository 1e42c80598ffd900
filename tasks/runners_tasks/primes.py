"""Count primes in [start, stop) by trial division: the document's Pool.map example."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from runners import Task, Verdict, param


@dataclass(frozen=True)
class PrimesParams:
    start: int = param(100_000, min=0, max=10**12, help="first number tested")
    stop: int = param(200_000, min=0, max=10**12, help="one past the last number tested")


def split(params: PrimesParams, seed: int) -> range:
    return range(params.start, max(params.start, params.stop))


def is_prime(n: int) -> bool:
    """Trial division up to sqrt(n): deliberately slow, like the document's."""
    if n < 2:
        return False
    for d in range(2, math.isqrt(n) + 1):
        if n % d == 0:
            return False
    return True


def combine(flags: Iterator[bool], params: PrimesParams) -> int:
    return sum(flags)


def sieve_count(start: int, stop: int) -> int:
    """Primes in [start, stop) by the sieve of Eratosthenes: a method independent of trial division."""
    if stop <= 2:
        return 0
    sieve = np.ones(stop, dtype=bool)
    sieve[:2] = False
    for p in range(2, math.isqrt(stop - 1) + 1):
        if sieve[p]:
            sieve[p * p::p] = False
    return int(np.count_nonzero(sieve[start:]))


def check(count: int, params: PrimesParams) -> Verdict:
    expected = sieve_count(params.start, params.stop)
    return Verdict(count == expected, f"the sieve of Eratosthenes counts {expected}")


TASK = Task("primes", PrimesParams, split, is_prime, combine, check,
            description="count primes by trial division: CPU-bound, many small items")
