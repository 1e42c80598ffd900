"""Monte Carlo estimate of pi: the document's CPU-bound benchmark, made reproducible by seeding."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from runners import Task, Verdict, item_seed, param

SIGMAS = 5.0  # a correct estimator fails this bound about once in 1.7 million runs


@dataclass(frozen=True)
class PiParams:
    samples: int = param(50_000_000, min=1, max=10**12, help="points thrown in the unit square")
    item_samples: int = param(1_000_000, min=1, help="points per item (fixes the seeds, not the batches)")
    method: Literal["python", "numpy"] = param("python", help="pure-Python loop (the document's) or numpy")


def split(params: PiParams, seed: int) -> list[tuple[int, int, str]]:
    """One item per `item_samples` points, each with its own seed from the root seed."""
    full, rest = divmod(params.samples, params.item_samples)
    sizes = [params.item_samples] * full + ([rest] if rest else [])
    return [(size, item_seed(seed, i), params.method) for i, size in enumerate(sizes)]


def count_inside(item: tuple[int, int, str]) -> int:
    """How many of `size` random points fall inside the quarter circle."""
    size, seed, method = item
    if method == "numpy":
        rng = np.random.default_rng(seed)
        inside = 0
        for start in range(0, size, 1 << 20):  # bounded memory for any item size
            xy = rng.random((2, min(1 << 20, size - start)))
            inside += int(np.count_nonzero(xy[0] * xy[0] + xy[1] * xy[1] <= 1.0))
        return inside
    rand = random.Random(seed).random
    inside = 0
    for _ in range(size):
        x, y = rand(), rand()
        if x * x + y * y <= 1.0:
            inside += 1
    return inside


def combine(counts: Iterator[int], params: PiParams) -> float:
    return 4.0 * sum(counts) / params.samples


def check(estimate: float, params: PiParams) -> Verdict:
    """Within SIGMAS standard errors of math.pi (binomial: p = pi/4, estimate = 4 * hits / n)."""
    p = math.pi / 4
    sigma = 4 * math.sqrt(p * (1 - p) / params.samples)
    error = abs(estimate - math.pi)
    ok = error <= SIGMAS * sigma
    return Verdict(ok, f"|estimate - pi| = {error:.2e} {'<=' if ok else '>'} {SIGMAS:g} sigma = "
                       f"{SIGMAS * sigma:.2e}")


TASK = Task("pi", PiParams, split, count_inside, combine, check,
            description="Monte Carlo pi: CPU-bound, seeded per item")
