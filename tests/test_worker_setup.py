"""A pool worker's set-up (`prepare_worker`) limits the BLAS and OpenMP thread pools it inherits to one
thread each. A forked worker inherits the driver's libraries, already started with a thread per core;
the driver finds them once (`before_forking_workers`) and its workers reuse that, unless they hold
libraries it did not see."""

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
    environment = {**os.environ, **DRIVER_THREADS, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(source), *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT, env=environment)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("backend", ["multiprocessing", "futures"])
def test_forked_workers_run_one_blas_thread_where_the_driver_runs_several(backend):
    seen = run_script("""
        import json, sys
        import numpy  # the driver's OpenBLAS, started with 2 threads
        import runners
        from runners import testing
        from threadpoolctl import threadpool_info

        driver = [info["num_threads"] for info in threadpool_info()]
        record = runners.run(testing.map_task(testing.blas_threads), backend=sys.argv[1], workers=2,
                             chunksize=1, params={"items": [0, 1, 2, 3]})
        print(json.dumps({"driver": driver, "workers": record.result}))
    """, backend)
    assert seen["driver"] and all(n > 1 for n in seen["driver"]), seen  # else this test proves nothing
    for worker in seen["workers"]:
        assert worker["pools"] and all(n == 1 for n in worker["pools"]), seen


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

        before_forking_workers()  # sees numpy's OpenBLAS only
        ctypes.CDLL(ctypes.util.find_library("gomp"))  # then an OpenMP runtime arrives
        driver = {info["internal_api"]: info["num_threads"] for info in threadpool_info()}
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        worker = context.Process(target=pools, args=(queue,))
        worker.start()
        print(json.dumps({"driver": driver, "worker": queue.get(timeout=60)}))
        worker.join()
    """)
    assert seen["driver"].get("openmp", 0) > 1 and seen["driver"].get("openblas", 0) > 1, seen
    assert seen["worker"] == {"openblas": 1, "openmp": 1}, seen
