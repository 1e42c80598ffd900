"""Automatic batching: batches are sized from measured cost, and bounded by the memory they take."""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

import runners
from runners import Task, Verdict, param
from runners._engine import MAX_BATCH_BYTES

VALUE_BYTES = 100_000


@dataclass(frozen=True)
class BlobParams:
    n: int = param(100, min=0, help="number of items")


def blob(item: int) -> bytes:
    """A cheap item with a big value: item count alone says nothing about a batch's memory."""
    return item.to_bytes(4, "little") * (VALUE_BYTES // 4)


def total_length(values: Iterator[bytes], params: BlobParams) -> int:
    return sum(len(v) for v in values)  # each value dropped once counted: the run need not hold them


BLOBS = Task("blobs", BlobParams, lambda params, seed: range(params.n), blob, total_length,
             lambda total, params: Verdict(total == params.n * VALUE_BYTES, "n x value size"))


def peak_while(run) -> tuple[runners.RunRecord, int]:
    tracemalloc.start()
    try:
        record = run()
        return record, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("backend", ["serial", "futures"])
def test_batches_of_big_values_stay_within_the_byte_budget(backend):
    n = 800  # 80 MB of values in all; by item cost alone (~20 us) a batch would take 200 of them (20 MB)
    record, peak = peak_while(lambda: runners.run(BLOBS, backend=backend, workers=2, params={"n": n}))
    assert record.check.ok, record.check
    assert record.batches >= n * VALUE_BYTES // MAX_BATCH_BYTES
    # The driver holds a few batches at a time (in flight, arriving, being combined), never the run.
    assert peak < 8 * MAX_BATCH_BYTES, f"driver peak {peak / 1e6:.1f} MB"


def test_small_values_still_come_many_to_a_batch():
    record = runners.run("tiny", backend="serial", params={"n": 400_000})
    assert record.check.ok
    assert record.batches <= 4 * 400_000 * 36 // MAX_BATCH_BYTES  # ~36 bytes per int in a list
