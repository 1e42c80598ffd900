"""The multiprocessing back-end beyond the conformance suite and the fault matrix."""

from __future__ import annotations

import multiprocessing.pool
import threading
import time

import psutil
from runners_multiprocessing import TERMINATE_SECONDS

import runners


def test_a_pool_whose_terminate_wedges_is_stopped_anyway(monkeypatch):
    # CPython's Pool.terminate can wait for ever on a large task half-written to the workers' pipe
    # (in _help_stuff_finish or the joins after it). Wedge it there: the shut-down must still end in
    # a few seconds and leave no worker running.
    monkeypatch.setattr(multiprocessing.pool.Pool, "_help_stuff_finish",
                        staticmethod(lambda *args: threading.Event().wait()))
    before = {child.pid for child in psutil.Process().children(recursive=True)}  # earlier tests' helpers
    backend = runners.load_backend("multiprocessing")(None, 2)
    with backend:
        record = runners.run_on(backend, runners.plan(runners.Job(task="tiny", params={"n": 1000})))
        assert record.result == runners.run("tiny", params={"n": 1000}).result
        workers = [child for child in psutil.Process().children(recursive=True) if child.pid not in before]
        assert len(workers) >= 2, workers  # its two workers, and whatever helper the pool started
        began = time.monotonic()
    assert time.monotonic() - began < TERMINATE_SECONDS + 2
    gone, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive, alive


def _handler_wakes(monkeypatch, pool_class, **kwargs) -> tuple[int, list]:
    """How often the pool's worker-handler thread woke while 200 one-item tasks came back."""
    wakes = []
    real = multiprocessing.pool.Pool._wait_for_updates
    monkeypatch.setattr(multiprocessing.pool.Pool, "_wait_for_updates",
                        staticmethod(lambda *args, **kw: wakes.append(1) or real(*args, **kw)))
    with pool_class(2, **kwargs) as pool:
        values = [pool.apply_async(abs, (-i,)) for i in range(200)]
        values = [value.get(timeout=60) for value in values]
        woke = len(wakes)
        pool.close()
        pool.join()  # the handler still learns that the last task is done, and ends
    return woke, values


def test_the_pool_s_worker_handler_does_not_wake_for_every_result(monkeypatch):
    # CPython's Pool wakes its worker-handler thread whenever a result waits unread in the pipe, and
    # until the result thread reads it: a spin per result that took 10-16 ms of the driver's CPU on a
    # 0.6-s run. The back-end's pool wakes it only for its workers' ends and the pool's changes.
    from runners_multiprocessing._compat import RecordingPool

    made = []
    woke, values = _handler_wakes(monkeypatch, RecordingPool, on_new_process=lambda p: made.append(p) or p)
    assert values == list(range(200))
    assert woke <= 5, woke
    plain_woke, _ = _handler_wakes(monkeypatch, multiprocessing.pool.Pool)
    assert plain_woke > 20, plain_woke  # what it replaces: this test measures the spin it removes


def test_a_worker_replaced_after_maxtasksperchild_still_wakes_the_handler(monkeypatch):
    # The handler still wakes when a worker ends: with one task per child, 20 tasks need 20 workers.
    from runners_multiprocessing._compat import RecordingPool

    made = []
    with RecordingPool(2, maxtasksperchild=1, on_new_process=lambda p: made.append(p) or p) as pool:
        assert pool.map(abs, range(-20, 0), chunksize=1) == list(range(20, 0, -1))
    assert len(made) >= 20
