"""Run by another interpreter (`python3.13t -I _threadprobe.py '{"n": .., "work": .., ...}'`), so it uses
the standard library only: pure-Python sums of squares, in one thread and then split over threads,
alternately for some rounds; prints one JSON line with both times per round and the GIL's state.
"""

import json
import sys
import threading
import time


def burn(work):
    total = 0
    for k in range(work):
        total += k * k
    return total


def one_thread(n, work):
    return sum(burn(work) for _ in range(n))


def threaded(n, work, threads):
    totals = [0] * threads

    def share(index):
        totals[index] = sum(burn(work) for _ in range(index, n, threads))

    workers = [threading.Thread(target=share, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(totals)


def timed(fn, *args):
    began = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - began, value


def main(args):
    n, work, threads, rounds = args["n"], args["work"], args["threads"], args["rounds"]
    expected = n * (work - 1) * work * (2 * work - 1) // 6
    serial, parallel, right = [], [], True
    for number in range(rounds):
        # alternate which goes first, so neither always runs on a warmer (or busier) machine
        order = [("serial", one_thread, (n, work)), ("threads", threaded, (n, work, threads))]
        for name, fn, fn_args in order if number % 2 == 0 else order[::-1]:
            seconds, value = timed(fn, *fn_args)
            (serial if name == "serial" else parallel).append(seconds)
            right = right and value == expected
    gil = getattr(sys, "_is_gil_enabled", None)
    print(json.dumps({"version": sys.version.split()[0], "gil": True if gil is None else bool(gil()),
                      "serial": serial, "threads": parallel, "right": right}))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
