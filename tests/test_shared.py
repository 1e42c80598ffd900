"""SharedArray: one copy in shared memory read by every worker, and no segment left behind, ever."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from multiprocessing import shared_memory

import numpy as np
import pytest

import runners
from runners import SharedArray, testing
from runners._shared import SHM_DIR, sweep

MB = 2**20


def slice_sum(item):
    shared, start, stop = item
    return float(shared.array[start:stop].sum())


def sum_or_raise(item):
    shared, start, stop = item
    if start == 0:
        raise ValueError("the first slice refuses")
    return float(shared.array[start:stop].sum())


def sum_or_die(item):
    """Attach, then SIGKILL this worker on the second slice: a worker dying while it maps the segment."""
    shared, start, stop = item
    total = float(shared.array[start:stop].sum())
    if stop == shared.shape[0]:
        os.kill(os.getpid(), signal.SIGKILL)
    return total


def exists(shared: SharedArray) -> bool:
    return os.path.exists(os.path.join(SHM_DIR, shared.name))


def slices(shared: SharedArray, parts: int):
    bounds = np.linspace(0, shared.shape[0], parts + 1).astype(int)
    return [(shared, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


@pytest.mark.parametrize("backend", ["serial", "threads", "multiprocessing", "futures"])
def test_workers_read_the_same_data_the_driver_shared(backend):
    data = np.random.default_rng(1).random(MB // 8 * 4)  # 4 MB
    with SharedArray.create(data) as shared:
        items = slices(shared, 6)
        record = runners.run(testing.map_task(slice_sum), backend=backend, workers=2, chunksize=1,
                             params={"items": items})
        expected = [float(data[a:b].sum()) for _, a, b in items]
        assert record.result == expected
    assert not exists(shared)


def test_the_handle_pickles_to_its_name_not_its_data():
    with SharedArray.create(np.zeros(MB, dtype=np.int32)) as shared:
        blob = pickle.dumps(shared)
        assert len(blob) < 300
        copy = pickle.loads(blob)
        assert not copy.owner and copy.shape == (MB,) and copy.dtype == np.int32
        assert not copy.array.flags.writeable
        assert int(copy.array.sum()) == 0


def test_segment_is_unlinked_after_an_item_raises():
    with pytest.raises(runners.TaskError, match="refuses"):  # noqa: PT012 - the with block is the point
        with SharedArray.create(np.arange(100_000.0)) as shared:
            runners.run(testing.map_task(sum_or_raise), backend="futures", workers=2, chunksize=1,
                        params={"items": slices(shared, 4)})
    assert not exists(shared)


def test_a_worker_killed_after_attaching_does_not_unlink_it():
    data = np.arange(200_000.0)
    with SharedArray.create(data) as shared:
        with pytest.raises(runners.WorkerLost):
            runners.run(testing.map_task(sum_or_die), backend="futures", workers=2, chunksize=1,
                        retries=0, params={"items": slices(shared, 2)})
        assert exists(shared)  # still there for the driver and the other workers
        record = runners.run(testing.map_task(slice_sum), backend="futures", workers=2, chunksize=1,
                             params={"items": slices(shared, 3)})
        assert sum(record.result) == float(data.sum())
    assert not exists(shared)


def test_dropping_the_creators_handle_unlinks_it():
    shared = SharedArray.create(np.ones(1000))
    name = shared.name
    del shared
    assert not os.path.exists(os.path.join(SHM_DIR, name))


def test_the_sweep_removes_segments_of_dead_creators_only():
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, timeout=30)
    dead = int(child.stdout)
    stale = shared_memory.SharedMemory(f"runners-{dead}-stale", create=True, size=64)
    stale.close()
    with SharedArray.create(np.ones(10)) as mine:  # create() sweeps first
        assert not os.path.exists(os.path.join(SHM_DIR, stale.name))
        assert exists(mine)  # our own pid is alive: kept
        assert sweep() == []
    from multiprocessing import resource_tracker

    resource_tracker.unregister(stale._name, "shared_memory")  # already gone: tell the tracker


def test_a_creator_killed_outright_is_cleaned_up_by_the_next_sweep():
    code = ("import sys, numpy as np; from runners import SharedArray; s = SharedArray.create(np.ones(1000));"
            "print(s.name, flush=True); sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        name = proc.stdout.readline().strip()
        assert os.path.exists(os.path.join(SHM_DIR, name))
    finally:
        proc.kill()
        proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while os.path.exists(os.path.join(SHM_DIR, name)) and time.monotonic() < deadline:
        sweep()  # (multiprocessing's resource tracker of the dead process may win the race)
        time.sleep(0.05)
    assert not os.path.exists(os.path.join(SHM_DIR, name))


@pytest.mark.parametrize("backend", ["serial", "futures", "multiprocessing"])
def test_bigarray_task_passes_its_check_and_leaves_no_segment(backend):
    record = runners.run("bigarray", backend=backend, workers=2, params={"megabytes": 4, "items": 5})
    assert record.check.ok, record.check
    assert len(record.result) == 5


def test_bigarray_pickled_variant_gives_the_same_sums():
    shm = runners.run("bigarray", backend="futures", workers=2, params={"megabytes": 2, "items": 3})
    pickled = runners.run("bigarray", backend="futures", workers=2,
                          params={"megabytes": 2, "items": 3, "share": "pickle"})
    assert shm.result == pickled.result and pickled.check.ok
