"""The one in-flight loop (runners.backend.in_flight): bounded, never blocked on a feed while results
are in flight, and cancelling what is left when its consumer stops."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from runners import testing
from runners.backend import Arrivals, Batch, Futures, in_flight, run_batch


def batch(i: int, fn=testing.echo) -> Batch:
    return Batch(i, fn, i, [i * 0.01 if fn is testing.sleep_seconds else i])


def test_results_come_while_the_feed_waits_for_more_batches():
    arrivals = Arrivals()
    with ThreadPoolExecutor(2) as pool:
        results = in_flight(Futures(lambda b: pool.submit(run_batch, b), "test"), arrivals, limit=4)
        arrivals.put(batch(0))
        first = next(results)  # the feed has nothing more, and is not finished: the result comes anyway
        assert first.batch_id == 0 and list(first.values) == [0]
        later = threading.Timer(0.3, lambda: (arrivals.put(batch(1)), arrivals.put(None)))
        later.start()
        rest = list(results)
        later.join()
    assert [r.batch_id for r in rest] == [1] and arrivals.finished


def test_never_more_than_the_limit_in_flight():
    running, most = 0, 0
    lock = threading.Lock()

    def slow(item):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return item

    with ThreadPoolExecutor(8) as pool:
        results = in_flight(Futures(lambda b: pool.submit(run_batch, b), "test"),
                            (batch(i, slow) for i in range(30)), limit=3)
        assert sorted(r.batch_id for r in results) == list(range(30))
    assert most == 3  # eight threads free, but three batches at a time


def test_what_is_still_in_flight_is_cancelled_when_the_consumer_stops():
    submitted = []
    with ThreadPoolExecutor(1) as pool:  # one at a time: the others wait in the pool, cancellable
        def submit(b):
            submitted.append(pool.submit(run_batch, b))
            return submitted[-1]

        results = in_flight(Futures(submit, "test"), (batch(i, testing.sleep_seconds) for i in range(10)),
                            limit=4)
        assert next(results).batch_id == 0
        results.close()
        assert len(submitted) == 4  # never more than four; refilled only when asked for more
        assert sum(f.cancelled() for f in submitted) >= 2  # those not yet started
