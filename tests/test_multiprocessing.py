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


def _handler_wakes_while_a_result_waits(monkeypatch, pool_class, **kwargs) -> int:
    """How often the pool's worker-handler thread woke in 0.5 s while a result waited unread (the
    result thread held up in the callback of the result before it), then the pool closed."""
    wakes = []
    real = multiprocessing.pool.Pool._wait_for_updates
    monkeypatch.setattr(multiprocessing.pool.Pool, "_wait_for_updates",
                        staticmethod(lambda *args, **kw: wakes.append(1) or real(*args, **kw)))
    holding, release = threading.Event(), threading.Event()

    def hold(_: object) -> None:  # runs in the result thread, which reads no result meanwhile
        holding.set()
        release.wait(30)

    with pool_class(2, **kwargs) as pool:
        # In this order, and waited for: the first's callback holds the result thread, then the
        # second's result waits in the pipe unread. (Sent together and slept on, the second could
        # finish first and be read, leaving nothing unread: a plain Pool then woke 0 times.)
        first = pool.apply_async(abs, (-1,), callback=hold)
        assert holding.wait(30)
        second = pool.apply_async(abs, (-2,))
        assert pool._outqueue._reader.poll(30)
        before = len(wakes)
        time.sleep(0.5)
        woke = len(wakes) - before
        release.set()
        assert (first.get(timeout=30), second.get(timeout=30)) == (1, 2)
        pool.close()
        pool.join()  # the handler still learns that the last task is done, and ends
    monkeypatch.undo()
    return woke


def test_the_pool_s_worker_handler_does_not_wake_for_every_result(monkeypatch):
    # CPython's Pool waits its worker-handler thread on the result pipe too, which stays readable
    # until the result thread reads the result: the handler loops for every result that comes back,
    # which took 10-16 ms of the driver's CPU on a 0.6-s run. The back-end's pool wakes it only for
    # its workers' ends and the pool's changes.
    from runners_multiprocessing._compat import RecordingPool

    assert _handler_wakes_while_a_result_waits(monkeypatch, RecordingPool, on_new_process=lambda p: p) == 0
    # What it replaces, so that this case can fail: a plain Pool's handler loops all the while.
    assert _handler_wakes_while_a_result_waits(monkeypatch, multiprocessing.pool.Pool) > 10


def test_a_worker_replaced_after_maxtasksperchild_still_wakes_the_handler(monkeypatch):
    # The handler still wakes when a worker ends: with one task per child, 20 tasks need 20 workers.
    from runners_multiprocessing._compat import RecordingPool

    made = []
    with RecordingPool(2, maxtasksperchild=1, on_new_process=lambda p: made.append(p) or p) as pool:
        assert pool.map(abs, range(-20, 0), chunksize=1) == list(range(20, 0, -1))
    assert len(made) >= 20
