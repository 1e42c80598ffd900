"""Automatic batching: batches are sized from measured cost, and bounded by the memory they take."""

from __future__ import annotations

import pickle
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from runners_tasks.tiny import add_one

import runners
from runners import Batch, PackedValues, Task, Verdict, param
from runners._backend import packed as packed_values
from runners._engine import MAX_BATCH_BYTES
from tests.conftest import installed_backends

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


def test_packed_values_come_back_whole_and_in_order():
    values = [*range(1000), "text", (1, 2.5), None, *range(10**6, 10**6 + 20_000)]
    packed = packed_values(values)
    assert isinstance(packed, PackedValues) and len(packed) == len(values)
    assert list(packed) == values
    again = pickle.loads(pickle.dumps(packed))  # as a transport moves it
    assert list(again) == values and again.nbytes == packed.nbytes
    assert packed.nbytes < 10 * len(values)  # ints at a few bytes each, not ~36 as objects


def test_values_that_do_not_pickle_are_left_to_the_transport():
    values = [*range(500), lambda: None]  # cloudpickle (Ray, dask) can send a lambda; pickle cannot
    assert packed_values(values) is values
    assert packed_values(list(range(10))) == list(range(10))  # too few to gain: left as they are


PROCESS_BACKENDS = [name for name in installed_backends()
                    if name != "auto" and runners.load_backend(name).separate_processes]


@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
def test_process_back_ends_send_many_small_values_packed(backend):
    with runners.load_backend(backend)(None, 2) as started:  # start() ... shutdown()
        batch = Batch(0, add_one, 0, range(10_000))
        [result] = list(started.run(iter([batch])))
    assert result.error is None, result.error
    assert isinstance(result.values, PackedValues)
    assert list(result.values) == list(range(1, 10_001))
