"""Automatic batching: batches are sized from measured cost, and bounded by the memory they take."""

from __future__ import annotations

import pickle
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

import pytest
from runners_tasks.tiny import add_one

import runners
from runners import Task, Verdict, param, testing
from runners._backend import packed as packed_values
from runners._batcher import MAX_BATCH_BYTES, MIN_ROUNDS, Batcher
from runners.backend import Batch, PackedValues
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
    # The driver holds a few batches at a time (in flight, arriving, being combined), never the run:
    # ~6-9 MB on a quiet machine; on a loaded one the pool's finished results wait longer to be read
    # (13.7 and 30 MB were seen beside other suites), so the bound is half the run, not a batch count.
    run_bytes = n * VALUE_BYTES
    assert peak < run_bytes // 2, f"driver peak {peak / 1e6:.1f} MB of a {run_bytes / 1e6:.0f} MB run"


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


class AttrDict(dict):
    __getattr__ = dict.__getitem__  # a common idiom: a missing attribute raises KeyError, not AttributeError


def test_odd_objects_do_not_break_sizing():
    task = Task("attrs", BlobParams, lambda params, seed: [AttrDict(n=i) for i in range(params.n)],
                testing.echo, lambda values, params: sum(v.n for v in values),
                lambda total, params: Verdict(True, ""))
    assert runners.run(task, params={"n": 100}).result == sum(range(100))


@dataclass
class Holder:
    data: object  # a numpy array: the object itself is small, what it holds is not


def holder(item: int) -> Holder:
    import numpy as np

    return Holder(np.full(VALUE_BYTES // 8, item, dtype=np.float64))


def test_values_are_sized_by_what_they_hold():
    n = 400
    task = Task("holders", BlobParams, lambda params, seed: range(params.n), holder,
                lambda values, params: sum(int(v.data[0]) for v in values),
                lambda total, params: Verdict(total == params.n * (params.n - 1) // 2, "sum of items"))
    record = runners.run(task, params={"n": n})
    assert record.check.ok
    assert record.batches >= n * VALUE_BYTES // MAX_BATCH_BYTES


def test_one_big_item_does_not_pin_later_batches_at_one_item():
    import numpy as np

    items = [np.zeros(300_000)] + list(range(20_000))
    record = runners.run(testing.map_task(testing.echo), params={"items": items})
    assert len(record.result) == len(items)
    assert record.batches < 1_000  # a running maximum of item sizes made 20,001


UNLOADABLE = Task("unloadable", BlobParams, lambda params, seed: range(params.n), testing.return_unloadable,
                  lambda values, params: sum(1 for _ in values), lambda total, params: Verdict(True, ""))


def test_a_value_that_does_not_unpickle_in_the_driver_is_a_clear_error():
    with pytest.raises(runners.RunnersError, match=r"items 0\.\.\d+ ran, but one of their values could not "
                                                   r"be unpickled.*refuses to be unpickled"):
        runners.run(UNLOADABLE, backend="futures", workers=2, params={"n": 2_000}, chunksize=2_000)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", PROCESS_BACKENDS)
@pytest.mark.parametrize("n", [10, 2_000])  # sent as they are, and packed
def test_a_result_that_does_not_unpickle_ends_the_run_with_an_error(backend, n):
    # The worker's function lives in runners.testing: a worker that imported this module would import
    # conftest too, whose multiprocessing folder a killed Ray worker leaves in the test's TMPDIR.
    with pytest.raises(runners.RunnersError, match="could not be unpickled in the driver"):
        runners.run(UNLOADABLE, backend=backend, workers=2, params={"n": n}, chunksize=n, retries=0)


def test_a_batch_whose_first_item_fails_packs_nothing():
    assert packed_values([]) == []


class LaggyBackend(runners.backend.Backend):
    """Runs batches here, each result arriving `lag` seconds after its batch was handed over: a
    back-end whose round trip costs more than its work (dask's ~30 ms, Ray's ~5 ms)."""

    name = "laggy"
    shares_memory = True
    lag = 0.0

    def start(self) -> None:
        pass

    def run(self, batches: Iterator[Batch]) -> Iterator[runners.backend.BatchResult]:
        for batch in batches:
            time.sleep(self.lag)
            yield runners.backend.run_batch(batch)

    def shutdown(self) -> None:
        pass


def spin(item: int) -> int:
    """~5 us of work, unless it is item 0, which takes 5 ms (a worker's cold first call)."""
    if item == 0:
        time.sleep(0.005)
    return sum(range(300)) + item


def spin_total(total: int, params: BlobParams) -> Verdict:
    expected = params.n * sum(range(300)) + params.n * (params.n - 1) // 2
    return Verdict(total == expected, "n x 44850 + sum of items")


SPIN = Task("spin", BlobParams, lambda params, seed: range(params.n), spin,
            lambda values, params: sum(values), spin_total)


def batch_sizes_on(lag: float, n: int) -> list[int]:
    backend = LaggyBackend(None, 2)
    backend.lag = lag
    sizes: list[int] = []
    with backend:
        record = runners.run_on(backend, runners.plan(runners.Job(task=SPIN, params={"n": n})),
                                progress=sizes.append)
    assert record.check.ok, record.check
    return sizes


def test_a_back_end_with_dear_round_trips_gets_fewer_batches():
    n = 40_000  # ~0.2 s of work: the balancing tail cuts it into ever smaller batches
    cheap, dear = batch_sizes_on(0.0, n), batch_sizes_on(0.03, n)
    assert len(dear) < len(cheap), (dear, cheap)


def sizes_after(observations: list[tuple[int, float, float]], total: int = 10**6) -> int:
    """The next batch size after results of (items, worker seconds, round trip seconds)."""
    batcher = Batcher(range(total), add_one, workers=2, chunksize=None, max_bytes=2**40)  # no byte bound
    batcher.issued = sum(items for items, _, _ in observations)
    for items, seconds, round_trip in observations:
        batcher.observe(runners.backend.BatchResult(0, [0] * items, seconds=seconds), round_trip)
    return batcher.next_size()


def test_tail_batches_stay_twice_the_measured_overhead_long():
    # 0.1 us items: a batch of 0.1 s is 1,000,000 of them, and 10 ms (the least tail batch) 100,000.
    quick, dear = (100_000, 0.01, 0.0105), (100_000, 0.01, 0.04)  # 0.5 ms, 30 ms beyond the work
    assert sizes_after([quick], total=1_100_000) == 250_000  # 1,000,000 left: a quarter (2 workers)
    assert sizes_after([quick], total=400_000) == pytest.approx(100_000, abs=1)  # halving stops at 10 ms
    assert sizes_after([dear], total=400_000) == pytest.approx(600_000, abs=1)  # 2 x 30 ms: all that is left
    # The least overhead seen counts (a batch that queued behind another did not cost more) ...
    assert sizes_after([(100_000, 0.01, 0.5), quick], total=500_000) == pytest.approx(100_000, abs=1)
    # ... and however dear a round trip looked (a cold worker's 5 s), no batch exceeds 0.1 s of work.
    assert sizes_after([(100_000, 0.01, 5.0)], total=10_000_000) == pytest.approx(1_000_000, abs=1)


def test_the_item_cost_follows_large_batches_not_the_first_slow_item():
    # A cold first call (5 ms) says little of what an item costs; 10,000 items in 20 ms do.
    size = sizes_after([(1, 0.005, 0.006), (10_000, 0.02, 0.021)])
    assert 40_000 <= size <= 50_000, size  # 0.1 s of 2.25 us items (the older batch counts half)
    # End to end: after the slow first item, sizes grow toward the target within a few batches. The
    # first item alone would say ~20 items a batch, quiet or loaded; the target is ~40,000 quiet, and
    # items cost several times more on a loaded machine (2,123 at a load average of 15), so the bound
    # is 1,000: far above what the first item says, within reach however loaded.
    sizes = batch_sizes_on(0.0, 400_000)
    assert sizes[0] == 1
    assert max(sizes[:5]) >= 1_000, sizes


def unmeasured_sizes(items, count: int, workers: int = 2) -> list[int]:
    """The sizes of the first `count` batches when none of them has come back."""
    batcher = Batcher(items, add_one, workers=workers, chunksize=None)
    return [len(batch.items) for batch in islice(batcher, count)]


def test_batches_handed_out_ahead_of_any_result_grow_up_to_the_rule_of_thumb():
    # A window of one-item batches (what a pool's in-flight loop asks for before a result), then,
    # asked for more with nothing back, doubling to len // (workers * 4): 1,000 // 8 = 125.
    assert unmeasured_sizes(range(1000), 12) == [1, 1, 1, 1, 2, 4, 8, 16, 32, 64, 125, 125]
    assert unmeasured_sizes(range(1000), 10, workers=3)[:8] == [1] * 6 + [2, 4]
    assert unmeasured_sizes(range(10), 8) == [1] * 8  # the rule gives 1: nothing to grow to
    assert unmeasured_sizes(iter(range(1000)), 12) == [1] * 12  # count unknown: no rule, no growth
    # and every item is handed out once, in order
    assert [i for b in Batcher(range(1000), add_one, workers=2, chunksize=None) for i in b.items] == \
        list(range(1000))


@pytest.mark.skipif("joblib" not in installed_backends(), reason="needs runners[joblib]")
def test_joblib_which_asks_for_work_ahead_of_its_results_gets_few_one_item_batches():
    # joblib's dispatch thread asks for a batch as each one ends, while its result loop, which the
    # engine learns from, polls every 10 ms: one-item batches of tiny went out 26-30 at a time.
    sizes: list[int] = []
    record = runners.run("tiny", backend="joblib", workers=2, params={"n": 1_000_000}, progress=sizes.append)
    assert record.check.ok
    assert sizes.count(1) <= 2 * 2, sizes
    assert len(sizes) <= 40, sizes


def test_a_packed_value_is_sized_without_its_pickle_framing():
    # One small int pickled alone is 17 bytes, 8,192 of them ~3 bytes each: after a one-item batch
    # the next may hold as many as after a large one, not 6x fewer.
    def most_after(values: list[int]) -> int:
        batcher = Batcher(range(10**7), add_one, workers=2, chunksize=None)
        batcher.observe(runners.backend.BatchResult(0, packed_values(values), seconds=1e-3), 2e-3)
        return batcher._most()

    one, many = most_after([5]), most_after(list(range(8192)))
    assert many / 2 <= one <= 2 * many, (one, many)


class RoundsBackend(runners.backend.Backend):
    """Runs batches here in rounds, as mpi's spmd scheme does: `workers` batches taken at a time, and
    the next round taken only once every result of this one is out. Records the sizes of each round."""

    name = "rounds"
    shares_memory = True

    def start(self) -> None:
        self.runs_in_rounds = True
        self.rounds: list[list[int]] = []

    def run(self, batches: Iterator[Batch]) -> Iterator[runners.backend.BatchResult]:
        batches = iter(batches)
        while round_ := [batch for _, batch in zip(range(self.workers), batches, strict=False)]:
            self.rounds.append([len(batch.items) for batch in round_])
            for batch in round_:
                yield runners.backend.run_batch(batch, pack=True)  # values as a process back-end's


@pytest.mark.parametrize("workers", [2, 3])
def test_a_back_end_that_runs_in_rounds_gets_a_few_whole_rounds_of_equal_batches(workers):
    n = 1_000_003
    with RoundsBackend(None, workers) as started:
        job = runners.plan(runners.Job(task="tiny", params={"n": n}))
        record = runners.run_on(started, job)
    assert record.result == runners.run("tiny", params={"n": n}).result
    first, *measured = started.rounds
    assert first == [1] * workers  # nothing measured yet: one item each, as on every back-end
    # Every round's batches alike (the last batch of the run may be short), and the items in at most
    # MIN_ROUNDS rounds after the first, as the rule of thumb len // (workers * 4) cuts them ...
    for round_ in measured[:-1]:
        assert len(set(round_)) == 1 and len(round_) == workers, started.rounds
    assert max(measured[-1]) == measured[-1][0] and min(measured[-1]) > 0, started.rounds
    assert len(measured) <= MIN_ROUNDS + 1, started.rounds  # + 1: a cold first measure may bound one


def test_rounds_share_what_is_left_out_evenly_whatever_the_first_measure_said():
    batcher = Batcher(range(1000), add_one, workers=2, chunksize=None, rounds=True)
    sizes = []
    for batch in batcher:
        sizes.append(len(batch.items))
        # 1 ms an item measured, then 1 us: the round under way keeps its size, the next ones follow
        cost = 1e-3 if len(sizes) <= 2 else 1e-6
        batcher.observe(runners.backend.BatchResult(batch.id, [0] * len(batch.items),
                                                    seconds=cost * len(batch.items)), 0.0)
    assert sum(sizes) == 1000
    assert sizes[:2] == [1, 1]
    rounds = [sizes[i:i + 2] for i in range(2, len(sizes), 2)]
    assert all(a == b for a, b in rounds[:-1]) and rounds[-1][0] >= rounds[-1][-1], sizes
    assert len(rounds) <= MIN_ROUNDS, sizes
