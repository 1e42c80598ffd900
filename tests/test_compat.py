"""The private APIs of other libraries that plugins use, one `_compat.py` per plugin: each use is checked
here against what is installed, so that a release that changes one fails here, loudly and by name,
rather than as a leak or a hang somewhere in the fault matrix. Each module's CHECKED says which
versions its uses were read against; pyproject.toml bounds those libraries below their next release."""

from __future__ import annotations

import inspect
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from importlib.metadata import version

import pytest


def minor(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2])


def test_process_pool_executor_internals_of_the_futures_back_end():
    from runners_futures import _compat

    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    try:
        assert pool.submit(abs, -3).result(timeout=60) == 3
        assert not _compat.is_broken(pool) and hasattr(pool, "_broken")
        workers = _compat.worker_processes(pool)
        assert len(workers) == 1 and all(p.is_alive() for p in workers.values())
        assert hasattr(pool, "_executor_manager_thread")
        if sys.version_info < (3, 12):
            assert isinstance(pool._pending_work_items, dict)
        _compat.terminate_workers(pool)
        for process in workers.values():
            process.join(30)
            assert not process.is_alive()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if sys.version_info >= (3, 14):
        assert hasattr(ProcessPoolExecutor, "terminate_workers")  # the public replacement, used there


def test_pool_internals_of_the_multiprocessing_back_end():
    from runners_multiprocessing import _compat

    made = []
    context = multiprocessing.get_context("spawn")
    with _compat.RecordingPool(2, context=context, on_new_process=lambda p: made.append(p) or p) as pool:
        assert pool.apply(abs, (-4,)) == 4
        assert len(made) == 2  # every worker went through Pool.Process, as the back-end relies on
    reader, writer = multiprocessing.Pipe(duplex=False)
    descriptor = _compat.keep_descriptor_open(writer)
    assert descriptor >= 0 and writer._handle is None  # the Connection let go of it
    import os

    os.close(descriptor)
    reader.close()


def test_loky_internals_of_the_joblib_back_end():
    pytest.importorskip("joblib")
    from runners_joblib import _compat

    low, high = (minor(v) for v in _compat.CHECKED)
    assert low <= minor(version("joblib")) <= high, f"joblib {version('joblib')} not in {_compat.CHECKED}"
    from joblib.externals.loky import backend

    # the semaphore names it unlinks: /loky-PID-... (loky's _make_name)
    assert 'f"/loky-{os.getpid()}-' in inspect.getsource(backend)
    import _multiprocessing

    assert callable(_multiprocessing.sem_unlink)
    _compat.stop_reusable_executor()  # with no executor: makes an empty one, which starts nothing


def test_ray_private_apis_of_the_ray_back_end():
    pytest.importorskip("ray")
    import ray
    from ray._private import ray_constants, worker
    from runners_ray import _compat

    low, high = (minor(v) for v in _compat.CHECKED)
    assert low <= minor(ray.__version__) <= high, f"ray {ray.__version__} not in {_compat.CHECKED}"
    assert list(inspect.signature(worker.print_to_stdstream).parameters)[:2] == ["data", "ignore_prefix"]
    assert isinstance(ray_constants.ENABLE_RAY_CLUSTER, bool)
    with _compat.loopback_only():
        assert ray_constants.ENABLE_RAY_CLUSTER is False
    source = inspect.getsource(ray.init)  # private keywords: taken from **kwargs, by name
    for keyword in _compat.private_instance("127.0.0.1", "/tmp", 1):
        assert f'kwargs.pop("{keyword}"' in source, f"ray.init no longer takes {keyword}"
