"""A pool worker runs one BLAS and one OpenMP thread. A forked worker inherits the driver's runtimes,
already started with a thread per core: the driver finds them and runs one thread itself while its
workers live (`before_forking_workers`), so that forked workers have nothing to limit; a worker that
holds a runtime the driver did not see limits it itself (`prepare_worker`)."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT

pytest.importorskip("numpy")

DRIVER_THREADS = {"OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "2"}  # many threads in the driver


def run_script(source: str, *args: str) -> dict:
    """Run `source` in a fresh interpreter; what it prints, one JSON object a line, merged."""
    environment = {**os.environ, **DRIVER_THREADS, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(source), *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=environment)
    assert done.returncode == 0, done.stderr
    return {key: value for line in done.stdout.splitlines() for key, value in json.loads(line).items()}


@pytest.mark.parametrize("backend", ["multiprocessing", "futures"])
def test_forked_workers_run_one_blas_thread_where_the_driver_runs_several(backend):
    seen = run_script("""
        import json, os, sys, threading, time
        import numpy  # the driver's OpenBLAS, started with 2 threads
        import runners
        from runners import testing
        from threadpoolctl import threadpool_info

        def native_threads():
            return len(os.listdir("/proc/self/task")) - threading.active_count()

        def threads_here(item):
            return {"pools": [info["num_threads"] for info in threadpool_info()], "native": native_threads()}

        driver = [info["num_threads"] for info in threadpool_info()]
        record = runners.run(testing.map_task(threads_here), backend=sys.argv[1], workers=2,
                             chunksize=1, params={"items": [0, 1, 2, 3]})
        after = [info["num_threads"] for info in threadpool_info()]
        # The forks stopped OpenBLAS's own threads here; restoring the count must not start one that
        # spins (~0.1 s of CPU after every run). A pool's ended thread may linger a moment in /proc.
        for _ in range(40):
            if native_threads() == 0:
                break
            time.sleep(0.05)
        print(json.dumps({"driver": driver, "workers": record.result, "driver after": after,
                          "native threads in the driver after": native_threads()}))
    """, backend)
    assert seen["driver"] and all(n > 1 for n in seen["driver"]), seen  # else this test proves nothing
    for worker in seen["workers"]:
        assert worker["pools"] and all(n == 1 for n in worker["pools"]), seen
        # and without a thread of OpenBLAS's own, which limiting it in the worker starts (and spins)
        assert worker["native"] == 0, seen
    assert seen["driver after"] == seen["driver"], seen  # the driver's own are as they were
    assert seen["native threads in the driver after"] == 0, seen


def test_a_forked_worker_starts_no_blas_thread_of_its_own():
    # Limiting OpenBLAS inside a forked child makes it start a thread there that spins for ~0.1 s of
    # CPU: a worker's set-up must leave the child nothing to limit (the driver limits around the fork).
    seen = run_script("""
        import json, multiprocessing, os, threading
        import numpy
        from runners.backend import before_forking_workers, prepare_worker

        numpy.ones((300, 300)) @ numpy.ones((300, 300))  # the driver's OpenBLAS threads are running

        def native_threads(queue):
            prepare_worker()
            queue.put(len(os.listdir("/proc/self/task")) - threading.active_count())

        before_forking_workers()
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        worker = context.Process(target=native_threads, args=(queue,))
        worker.start()
        print(json.dumps({"native threads in the worker": queue.get(timeout=60)}))
        worker.join()
    """)
    assert seen == {"native threads in the worker": 0}, seen


def test_a_forked_worker_that_limits_openblas_itself_starts_no_thread_doing_so():
    # A fork stops OpenBLAS's threads, and setting its count afterwards starts them again (one spins
    # ~0.1 s): where the driver did not limit first, the worker's own limit must leave them stopped.
    seen = run_script("""
        import json, multiprocessing, os, threading
        import numpy
        from runners.backend import prepare_worker
        from threadpoolctl import threadpool_info

        def limited(queue):
            prepare_worker()
            queue.put({"native": len(os.listdir("/proc/self/task")) - threading.active_count(),
                       "pools": [info["num_threads"] for info in threadpool_info()]})

        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        worker = context.Process(target=limited, args=(queue,))
        worker.start()
        print(json.dumps({"driver": [info["num_threads"] for info in threadpool_info()],
                          "worker": queue.get(timeout=60)}))
        worker.join()
    """)
    assert all(n > 1 for n in seen["driver"]), seen  # else the worker has nothing to limit
    assert seen["worker"] == {"native": 0, "pools": [1]}, seen


@pytest.mark.skipif(ctypes.util.find_library("gomp") is None, reason="no libgomp on this machine")
def test_a_worker_limits_a_library_loaded_after_the_driver_looked():
    seen = run_script("""
        import ctypes, ctypes.util, json, multiprocessing
        import numpy
        from runners.backend import before_forking_workers, prepare_worker
        from threadpoolctl import threadpool_info

        def pools(queue):
            prepare_worker()
            queue.put({info["internal_api"]: info["num_threads"] for info in threadpool_info()})

        def threads():
            return {info["internal_api"]: info["num_threads"] for info in threadpool_info()}

        before = threads()
        restore = before_forking_workers()  # sees numpy's OpenBLAS only
        ctypes.CDLL(ctypes.util.find_library("gomp"))  # then an OpenMP runtime arrives
        driver = threads()
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        worker = context.Process(target=pools, args=(queue,))
        worker.start()
        print(json.dumps({"before": before, "driver": driver, "worker": queue.get(timeout=60)}))
        worker.join()
        restore()
        print(json.dumps({"restored": threads()}))
    """)
    assert seen["before"]["openblas"] > 1, seen  # else this test proves nothing
    assert seen["driver"] == {"openblas": 1, "openmp": seen["driver"]["openmp"]}, seen
    assert seen["driver"]["openmp"] > 1, seen  # the driver never saw it: its workers must find it
    assert seen["worker"] == {"openblas": 1, "openmp": 1}, seen
    assert seen["restored"]["openblas"] == seen["before"]["openblas"], seen
