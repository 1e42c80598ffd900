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
