"""One large numpy array for every worker, by each approach's own mechanism: seconds and memory.

The document's comparison table (section 11) says how each approach shares data: threads and asyncio
directly, multiprocessing through special mechanisms, joblib by automatic serialisation, Ray through
distributed objects, mpi4py by MPI communication. One item is one mechanism: the driver holds an array
of `megabytes` (0, 1, 2, ...), starts `workers` workers the approach's own way, hands every worker the
whole array by that mechanism, and each sends back one number, the sum of every `workers`-th element
from its offset (which touches every page). Per mechanism:
- startup_s: workers ready (not part of `seconds`);  seconds: from the hand-over to the last sum back;
- workers_mb: what the ready workers added to the process tree's memory;
- added_mb: what the hand-over added at its peak; copies = added_mb / the array's size (0: shared).
Memory is the whole tree's (`runners.tree_mb`: PSS, each shared page counted once). Run it on the serial
back-end: each item starts and stops its own workers, and measurements must not overlap. Each library
is imported only when its row runs; one that is not installed gives a row that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
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
from typing import Any, Literal

import numpy as np
import psutil

from runners import (
    PeakMemory,
    SharedArray,
    Task,
    Verdict,
    load_backend,
    param,
    scratch_folder,
    tree_mb,
)

Mechanism = Literal["threads", "asyncio", "shared_memory", "pickle", "joblib_memmap", "ray_put",
                    "mpi_bcast", "dask_scatter"]
# mechanism -> (the document's approach, how the array reaches the workers, what must be installed)
MECHANISMS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "threads": ("threading", "shared directly: threads read the driver's array", ()),
    "asyncio": ("asyncio", "shared directly: coroutines of one thread read the driver's array", ()),
    "shared_memory": ("multiprocessing", "copied once into multiprocessing.shared_memory (runners."
                      "SharedArray); workers map it", ()),
    "pickle": ("multiprocessing", "a plain argument of Pool.starmap: pickled to every worker", ()),
    "joblib_memmap": ("joblib", "a plain argument of joblib.Parallel: memory-mapped automatically",
                      ("joblib",)),
    "ray_put": ("ray", "ray.put once; each task gets the ObjectRef", ("ray",)),
    "mpi_bcast": ("mpi4py", "comm.Bcast of the buffer from rank 0 to every rank", ("mpi4py",)),
    "dask_scatter": ("dask", "client.scatter(broadcast=True); each task gets the future",
                     ("distributed",)),
}
TIMEOUT = 120.0  # seconds a mechanism may take before its workers are stopped
LINGER = 10.0  # seconds a mechanism's processes get to end after it closed them
INTERPRETER_HELPERS = ("resource_tracker", "forkserver")  # one per interpreter, not per pool
WARM_PAUSE = 0.05  # seconds each warm-up call takes


@dataclass(frozen=True)
class SharingParams:
    megabytes: float = param(200, min=1, max=65536, help="size of the float64 array every worker gets")
    workers: int = param(2, min=1, max=64, help="workers (threads, processes, ranks) that each get it")
    mechanisms: list[Mechanism] = param(list(MECHANISMS), help="mechanisms to measure, in this order")
    hold: float = param(0.25, min=0, max=60, help="seconds the workers keep the array once all have it, "
                        "so that the memory sampler sees every copy; taken off `seconds`")


def length(params: SharingParams) -> int:
    return int(params.megabytes * 2**20) // 8


def split(params: SharingParams, seed: int) -> list[tuple[str, int, int, float]]:
    return [(mechanism, length(params), params.workers, params.hold) for mechanism in params.mechanisms]


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


def expected_sums(n: int, step: int) -> list[float]:
    """The closed form of strided_sum over 0, 1, ..., n-1 (exact in float64 below 2**53)."""
    sums = []
    for offset in range(step):
        terms = max(0, -(-(n - offset) // step))
        sums.append(float(terms * offset + step * terms * (terms - 1) // 2))
    return sums


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


class _Meter:
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


def measure(item: tuple[str, int, int, float]) -> dict[str, Any]:
    """One mechanism: start its workers, hand them the array, check the sums, stop them."""
    mechanism, n, workers, hold = item
    approach, how, needs = MECHANISMS[mechanism]
    array_mb = n * 8 / 2**20
    row: dict[str, Any] = {"mechanism": mechanism, "approach": approach, "workers": workers,
                           "array_mb": round(array_mb, 1)}
    missing = [name for name in needs if importlib.util.find_spec(name) is None]
    if mechanism == "mpi_bcast" and not missing and _mpiexec() is None:
        missing.append("mpiexec")
    if missing:
        return {**row, "ok": None, "note": f"not installed: {', '.join(missing)} (pip install "
                                           f"'runners[{_extra(approach)}]')"}
    before = {p.pid for p in _children()}
    meter = _Meter(array_mb)
    folder = scratch_folder("sharing")
    try:
        if mechanism == "mpi_bcast":  # rank 0 makes the array, as an MPI program does; Bcast is collective
            sums = _mpi_bcast(n, workers, hold, meter)
        else:
            array = np.arange(n, dtype=np.float64)
            sums = RUNNERS[mechanism](array, workers, Together(folder, workers, hold), meter)
            meter.seconds = max(0.0, meter.seconds - hold)  # the workers held the array together
            del array
        ok = sums == expected_sums(n, workers)
        note = "" if ok else f"sums {sums} differ from the closed form {expected_sums(n, workers)}"
    except Exception as exc:  # noqa: BLE001 - one mechanism failing must not hide the others' rows
        ok, note = False, f"failed: {type(exc).__name__}: {(str(exc).strip() or '?').splitlines()[0][:200]}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    left = _reap(before)
    if left:
        ok, note = False, f"{note}; stopped {left} of its processes left running".lstrip("; ")
    measured = ok is not False and meter.peak_mb > 0
    added = max(0.0, meter.peak_mb - meter.ready_mb) if measured else None
    return {**row, "startup_s": round(meter.startup, 4) if measured else None,
            "seconds": round(meter.seconds, 4) if measured else None,
            "workers_mb": round(max(0.0, meter.ready_mb - meter.base_mb - array_mb), 1) if measured else None,
            "added_mb": None if added is None else round(added, 1),
            "copies": None if added is None else round(added / array_mb, 2), "ok": ok, "note": note}


def _threads(array: np.ndarray, workers: int, together: Together, meter: _Meter) -> list[float]:
    with ThreadPoolExecutor(workers, thread_name_prefix="sharing") as pool:
        list(pool.map(_pid, range(workers)))  # threads share one pid: one round starts them
        meter.ready()
        with meter.handover(together):
            return list(pool.map(strided_sum, [array] * workers, range(workers), [workers] * workers,
                                 [together] * workers))


def _asyncio(array: np.ndarray, workers: int, together: Together, meter: _Meter) -> list[float]:
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
    ctx = multiprocessing.get_context("spawn")  # no fork of a driver that holds threads
    pool = ctx.Pool(workers)
    try:
        _warm(lambda k: pool.map(_pid, range(k), chunksize=1), workers)
        yield pool
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _shared_memory(array: np.ndarray, workers: int, together: Together, meter: _Meter) -> list[float]:
    with _pool(workers) as pool:
        meter.ready()
        with meter.handover(together), SharedArray.create(array) as shared:
            return pool.starmap(strided_sum, [(shared, i, workers, together) for i in range(workers)],
                                chunksize=1)


def _pickle(array: np.ndarray, workers: int, together: Together, meter: _Meter) -> list[float]:
    with _pool(workers) as pool:
        meter.ready()
        with meter.handover(together):
            return pool.starmap(strided_sum, [(array, i, workers, together) for i in range(workers)],
                                chunksize=1)


def _joblib_memmap(array: np.ndarray, workers: int, together: Together, meter: _Meter) -> list[float]:
    from joblib import Parallel, delayed
    from joblib.externals.loky import get_reusable_executor

    temp = scratch_folder("sharing")  # joblib's memmaps: this run's folder, removed below
    try:
        with Parallel(n_jobs=workers, backend="loky", max_nbytes="1M", temp_folder=temp) as parallel:
            _warm(lambda k: parallel(delayed(_pid)(i) for i in range(k)), workers)
            meter.ready()
            with meter.handover(together):
                return parallel(delayed(strided_sum)(array, i, workers, together) for i in range(workers))
    finally:
        executor = get_reusable_executor(reuse=True)  # loky keeps its workers for reuse: stop them
        executor.terminate() if hasattr(executor, "terminate") else executor.shutdown(wait=True)
        shutil.rmtree(temp, ignore_errors=True)


def _ray_put(array: np.ndarray, workers: int, together: Together, meter: _Meter) -> list[float]:
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


def _dask_scatter(array: np.ndarray, workers: int, together: Together, meter: _Meter) -> list[float]:
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


def _mpi_bcast(n: int, workers: int, hold: float, meter: _Meter) -> list[float]:
    """`mpiexec -n workers` of runners_tasks._bcast: rank 0 makes the array, says when every rank is
    ready, and on "go" broadcasts it and gathers the sums (its own clock times that); the ranks keep
    their buffers until "done"."""
    command = [_mpiexec(), *_loopback(), "-n", str(workers), sys.executable, "-m", "runners_tasks._bcast",
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


def _mpiexec() -> str | None:
    beside = Path(sys.executable).with_name("mpiexec")  # the mpich wheel's, in a virtualenv
    return str(beside) if beside.is_file() else shutil.which("mpiexec")


def _loopback() -> list[str]:
    """Ranks talk over the loopback interface only (hydra's own control port is not ours to bind)."""
    names = {name for _, name in socket.if_nameindex()} if hasattr(socket, "if_nameindex") else set()
    return ["-iface", "lo"] if "lo" in names else []


def _stop_group(job: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(job.pid, signal.SIGKILL)


def _children() -> list[Any]:
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def _reap(before: set[int]) -> int:
    """Wait for the processes a mechanism started to end; stop those still there after LINGER.
    multiprocessing's (and loky's) resource tracker serves the interpreter, not the mechanism: kept."""
    deadline = time.monotonic() + LINGER
    while True:
        left = [p for p in _children() if p.pid not in before and _running(p) and not _helper(p)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(left, timeout=5)
    return len(left)


def _helper(process: Any) -> bool:
    try:
        return any(name in " ".join(process.cmdline()) for name in INTERPRETER_HELPERS)
    except psutil.Error:
        return False


def _running(process: Any) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _extra(approach: str) -> str:
    return {"mpi4py": "mpi", "dask": "dask", "ray": "ray", "joblib": "joblib"}.get(approach, "all")


RUNNERS: dict[str, Callable[[np.ndarray, int, Together, _Meter], list[float]]] = {
    "threads": _threads, "asyncio": _asyncio, "shared_memory": _shared_memory, "pickle": _pickle,
    "joblib_memmap": _joblib_memmap, "ray_put": _ray_put, "dask_scatter": _dask_scatter,
}


def combine(rows: Iterator[dict[str, Any]], params: SharingParams) -> list[dict[str, Any]]:
    return list(rows)


def check(rows: list[dict[str, Any]], params: SharingParams) -> Verdict:
    """Every mechanism that ran must have brought back the closed-form sums and left nothing behind."""
    planned = list(params.mechanisms)
    if [r["mechanism"] for r in rows] != planned:
        return Verdict(False, f"rows {[r['mechanism'] for r in rows]} do not match the plan {planned}")
    failed = [f"{r['mechanism']}: {r['note']}" for r in rows if r["ok"] is False]
    if failed:
        return Verdict(False, "; ".join(failed))
    skipped = [r["mechanism"] for r in rows if r["ok"] is None]
    ran = len(rows) - len(skipped)
    return Verdict(True, f"{ran} mechanisms gave every worker the array and the exact sums back"
                   + (f"; not installed: {', '.join(skipped)}" if skipped else ""))


TASK = Task("sharing", SharingParams, split, measure, combine, check,
            description="every worker gets one large array by each approach's own mechanism: time, memory")
