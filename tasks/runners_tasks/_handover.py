"""How each approach hands one large array to its workers: the mechanisms of the `sharing` task.

Each mechanism starts its workers the approach's own way, says when they are ready (`Meter.ready`),
hands the array over inside `Meter.handover` (timed, and the process tree weighed), and returns each
worker's sum. The functions the workers run live here, so that they import this module, not the task's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runners import PeakMemory, SharedArray, load_backend, scratch_folder, tree_mb

TIMEOUT = 120.0  # seconds a mechanism may take before its workers are stopped
WARM_PAUSE = 0.05  # seconds each warm-up call takes


@dataclass(frozen=True)
class Together:
    """Workers that use the array at the same time: each, once it has summed, waits until every worker
    has (a file each in `folder`), then all keep it `hold` seconds. So every copy a mechanism makes is
    held at once, and the tree's peak counts them all, whatever order the mechanism delivered them in."""

    folder: str
    workers: int
    hold: float

    def arrived(self, offset: int) -> bool:
        Path(self.folder, str(offset)).touch()
        return len(os.listdir(self.folder)) >= self.workers

    def wait(self, offset: int) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not self.arrived(offset):
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {offset}: the other workers never got the array")
            time.sleep(0.005)
        time.sleep(self.hold)

    async def wait_async(self, offset: int) -> None:
        while not self.arrived(offset):
            await asyncio.sleep(0.005)
        await asyncio.sleep(self.hold)


def _weigh_when_all_hold(together: Together, peak: PeakMemory, done: threading.Event) -> None:
    while not done.wait(0.005):
        if len(os.listdir(together.folder)) >= together.workers:
            peak.take()  # inside the hold: every copy is there
            return


def strided_sum(array: Any, offset: int, step: int, together: Together | None = None) -> float:
    """What one worker computes: every `step`-th element from `offset` (a view, so no copy)."""
    source = array.array if isinstance(array, SharedArray) else array
    total = float(source[offset::step].sum())
    if together is not None:
        together.wait(offset)
    return total


def _pid(index: int) -> int:
    time.sleep(WARM_PAUSE)  # long enough that a free worker takes the next call, not this one again
    return os.getpid()


def _warm(call: Callable[[int], list[int]], workers: int) -> None:
    """Call `_pid` on the workers until each has answered: all started and imported this module, so
    that what they weigh when ready is what they weigh at work."""
    deadline = time.monotonic() + TIMEOUT
    seen: set[int] = set()
    while len(seen) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(seen)} of {workers} workers started in {TIMEOUT:g} s")
        seen.update(call(workers))


class Meter:
    """Times and weighs one mechanism: base, workers ready, then the hand-over's peak."""

    def __init__(self, array_mb: float) -> None:
        self.array_mb = array_mb
        self.base_mb = tree_mb()  # before the array: it is counted apart, at its nominal size
        self.began = time.perf_counter()
        self.startup = self.seconds = self.ready_mb = self.peak_mb = 0.0

    def ready(self) -> None:
        self.startup = time.perf_counter() - self.began
        self.ready_mb = tree_mb()

    @contextlib.contextmanager
    def handover(self, together: Together | None = None) -> Iterator[None]:
        """Times the block and samples the tree's peak, once more when every worker holds the array."""
        with PeakMemory() as peak:
            done = threading.Event()
            watcher = threading.Thread(target=_weigh_when_all_hold, args=(together, peak, done), daemon=True)
            if together is not None:
                watcher.start()
            began = time.perf_counter()
            try:
                yield
            finally:
                self.seconds = time.perf_counter() - began
                done.set()
                if together is not None:
                    watcher.join()
        self.peak_mb = peak.mb


def _threads(array: np.ndarray, workers: int, together: Together, meter: Meter) -> list[float]:
    with ThreadPoolExecutor(workers, thread_name_prefix="sharing") as pool:
        list(pool.map(_pid, range(workers)))  # threads share one pid: one round starts them
        meter.ready()
        with meter.handover(together):
            return list(pool.map(strided_sum, [array] * workers, range(workers), [workers] * workers,
                                 [together] * workers))


def _asyncio(array: np.ndarray, workers: int, together: Together, meter: Meter) -> list[float]:
    async def one(offset: int) -> float:
        total = strided_sum(array, offset, workers)
        await together.wait_async(offset)
        return total

    async def every() -> list[float]:
        return list(await asyncio.gather(*(one(i) for i in range(workers))))

    loop = asyncio.new_event_loop()
    try:
        meter.ready()
        with meter.handover(together):
            return loop.run_until_complete(every())
    finally:
        loop.close()


@contextlib.contextmanager
def _pool(workers: int) -> Iterator[Any]:
    """A Pool of spawned workers, all started. Its calls wait at most TIMEOUT: a worker that dies in a
    call leaves Pool.map waiting for ever."""
    ctx = multiprocessing.get_context("spawn")  # no fork of a driver that holds threads
    pool = ctx.Pool(workers)
    try:
        _warm(lambda k: pool.map_async(_pid, range(k), chunksize=1).get(TIMEOUT), workers)
        yield pool
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _shared_memory(array: np.ndarray, workers: int, together: Together, meter: Meter) -> list[float]:
    with _pool(workers) as pool:
        meter.ready()
        with meter.handover(together), SharedArray.create(array) as shared:
            calls = [(shared, i, workers, together) for i in range(workers)]
            return pool.starmap_async(strided_sum, calls, chunksize=1).get(TIMEOUT)


def _pickle(array: np.ndarray, workers: int, together: Together, meter: Meter) -> list[float]:
    with _pool(workers) as pool:
        meter.ready()
        with meter.handover(together):
            calls = [(array, i, workers, together) for i in range(workers)]
            return pool.starmap_async(strided_sum, calls, chunksize=1).get(TIMEOUT)


def _joblib_memmap(array: np.ndarray, workers: int, together: Together, meter: Meter) -> list[float]:
    from joblib import Parallel, delayed
    from joblib.externals.loky import get_reusable_executor

    temp = scratch_folder("sharing")  # joblib's memmaps: this run's folder, removed below
    try:
        # one call per dispatch: two calls in one batch would run on one worker, the second waiting on
        # the first, which waits for the other worker to have the array
        with Parallel(n_jobs=workers, backend="loky", max_nbytes="1M", temp_folder=temp, batch_size=1) \
                as parallel:
            _warm(lambda k: parallel(delayed(_pid)(i) for i in range(k)), workers)
            meter.ready()
            with meter.handover(together):
                return parallel(delayed(strided_sum)(array, i, workers, together) for i in range(workers))
    finally:
        executor = get_reusable_executor(reuse=True)  # loky keeps its workers for reuse: stop them
        executor.terminate() if hasattr(executor, "terminate") else executor.shutdown(wait=True)
        shutil.rmtree(temp, ignore_errors=True)


def _ray_put(array: np.ndarray, workers: int, together: Together, meter: Meter) -> list[float]:
    import ray

    # runners' ray back-end starts the private instance: on 127.0.0.1 only, with a token, in a folder
    # of its own; the measurement itself is plain Ray.
    ray_backend = load_backend("ray")
    store = max(100, int(3 * array.nbytes / 2**20))  # room for the object, and for Ray's own
    with ray_backend(ray_backend.Options(address="local", object_store_mb=store), workers):
        task = ray.remote(strided_sum).options(num_cpus=1)
        pid = ray.remote(_pid).options(num_cpus=1)
        _warm(lambda k: ray.get([pid.remote(i) for i in range(k)]), workers)
        meter.ready()
        with meter.handover(together):
            ref = ray.put(array)
            sums = ray.get([task.remote(ref, i, workers, together) for i in range(workers)])
            del ref
        return sums


def _dask_scatter(array: np.ndarray, workers: int, together: Together, meter: Meter) -> list[float]:
    import dask
    from distributed import Client, LocalCluster

    temp = scratch_folder("sharing")
    try:
        with dask.config.set({"temporary-directory": temp}), \
                LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                             dashboard_address=None, silence_logs=logging.CRITICAL,
                             local_directory=temp) as cluster, \
                Client(cluster, set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=TIMEOUT)
            _warm(lambda k: client.gather([client.submit(_pid, i, pure=False) for i in range(k)]), workers)
            meter.ready()
            with meter.handover(together):
                future = client.scatter(array, broadcast=True)
                where = list(client.scheduler_info()["workers"])  # one task each: they wait for each other
                tasks = [client.submit(strided_sum, future, i, workers, together, pure=False,
                                       workers=[where[i % len(where)]]) for i in range(workers)]
                return client.gather(tasks)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def mpi_bcast(n: int, workers: int, hold: float, meter: Meter) -> list[float]:
    """`mpiexec -n workers` of runners_tasks._bcast: rank 0 makes the array, says when every rank is
    ready, and on "go" broadcasts it and gathers the sums (its own clock times that); the ranks keep
    their buffers until "done"."""
    command = [mpiexec(), *_loopback(), "-n", str(workers), sys.executable, "-m", "runners_tasks._bcast",
               str(n)]
    job = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                           start_new_session=True)  # a group of its own, to stop it whole
    watchdog = threading.Timer(TIMEOUT, _stop_group, (job,))
    watchdog.start()
    try:
        if job.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the MPI job ended before its ranks were ready (exit {job.wait()})")
        meter.ready()
        with meter.handover():
            job.stdin.write("go\n")
            job.stdin.flush()
            line = job.stdout.readline()
            time.sleep(hold if line else 0)
        if line:
            job.stdin.write("done\n")
            job.stdin.flush()
        if not line:
            raise RuntimeError(f"the MPI job ended without its sums (exit {job.wait()})")
        answer = json.loads(line)
        meter.seconds = answer["seconds"]  # rank 0's clock: the hand-over, not the pipe to the driver
        if job.wait(TIMEOUT) != 0:
            raise RuntimeError(f"the MPI job exited with {job.returncode}")
        return answer["sums"]
    finally:
        watchdog.cancel()
        if job.poll() is None:
            _stop_group(job)
        job.wait()
        for stream in (job.stdin, job.stdout):
            with contextlib.suppress(OSError):
                stream.close()


def mpiexec() -> str | None:
    beside = Path(sys.executable).with_name("mpiexec")  # the mpich wheel's, in a virtualenv
    return str(beside) if beside.is_file() else shutil.which("mpiexec")


def _loopback() -> list[str]:
    """Ranks talk over the loopback interface only (hydra's own control port is not ours to bind)."""
    names = {name for _, name in socket.if_nameindex()} if hasattr(socket, "if_nameindex") else set()
    return ["-iface", "lo"] if "lo" in names else []


def _stop_group(job: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(job.pid, signal.SIGKILL)


RUNNERS: dict[str, Callable[[np.ndarray, int, Together, Meter], list[float]]] = {
    "threads": _threads, "asyncio": _asyncio, "shared_memory": _shared_memory, "pickle": _pickle,
    "joblib_memmap": _joblib_memmap, "ray_put": _ray_put, "dask_scatter": _dask_scatter,
}
