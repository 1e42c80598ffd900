"""Factorise large numbers by trial division: the document's ProcessPoolExecutor example."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from runners import Task, Verdict, param

DOCUMENT_NUMBERS = [112272535095293, 112582705942171, 112272535095293,
                    115280095190773, 115797848077099, 117450548693743]


@dataclass(frozen=True)
class FactorizeParams:
    numbers: list[int] = param(DOCUMENT_NUMBERS, help="the integers (>= 2) to factorise")


def split(params: FactorizeParams, seed: int) -> list[int]:
    return list(params.numbers)


def factorize(n: int) -> list[int]:
    """Prime factors of n in ascending order, with multiplicity."""
    factors = []
    d = 2
    while d * d <= n:
        while n % d == 0:
            factors.append(d)
            n //= d
        d += 1
    if n > 1:
        factors.append(n)
    return factors


def combine(results: Iterator[list[int]], params: FactorizeParams) -> list[list[int]]:
    return list(results)


def is_probable_prime(n: int) -> bool:
    """Miller-Rabin with the first 12 prime bases: exact for n < 3.3e24, and unrelated to trial division."""
    if n < 2:
        return False
    bases = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    if n in bases:
        return True
    if any(n % b == 0 for b in bases):
        return False
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def check(result: list[list[int]], params: FactorizeParams) -> Verdict:
    """Each product gives back its number, and each factor is prime by Miller-Rabin."""
    for n, factors in zip(params.numbers, result, strict=True):
        product = 1
        for f in factors:
            product *= f
        if product != n or not all(is_probable_prime(f) for f in factors):
            return Verdict(False, f"{n}: factors {factors} are wrong")
    return Verdict(True, f"{len(result)} products match and every factor is prime (Miller-Rabin)")


TASK = Task("factorize", FactorizeParams, split, factorize, combine, check,
            description="factorise big integers: few, long, uneven items")
