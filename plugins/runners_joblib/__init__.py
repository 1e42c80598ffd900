"""The `joblib` back-end: joblib.Parallel, with its inner back-ends, batching and memmapping."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
import threading
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import BrokenExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Any, Literal

from runners.backend import (
    Backend,
    Batch,
    BatchResult,
    ConfigError,
    WorkerLost,
    load_backend,
    param,
    pickle_batch,
    prepare_worker,
    run_batch,
    run_pickled_batch,
    scratch_folder,
    transport_failure,
    worker_environment,
)

from ._compat import stop_reusable_executor, unlink_orphaned_loky_semaphores

# Inner back-ends whose joblib support needs another extra than runners[joblib].
BRIDGES = {"dask": ("distributed", "dask"), "ray": ("ray", "ray")}
# joblib can stream results only from these; the others run in windows of batches (see run()).
STREAMING = ("loky", "threading", "dask")
LOCAL_PROCESSES = ("loky", "multiprocessing")  # inner back-ends whose pools this run starts here


@dataclass(frozen=True)
class JoblibOptions:
    inner: Literal["loky", "threading", "multiprocessing", "dask", "ray"] = param(
        "loky", help="joblib's own back-end; dask starts a private local instance on 127.0.0.1, ray "
                     "uses a Ray already running (this process's, or the cluster at RAY_ADDRESS)")
    batch_size: int | Literal["auto"] = param(
        1, min=1, help="runners batches joblib sends per dispatch. runners already sized each batch, so 1; "
        "auto lets joblib group batches while a dispatch takes under 0.2 s, which on cheap items holds "
        "the results of hundreds of them at once (measured: driver peak 48 -> 157 MB at 10M items)")
    max_nbytes: int | str | None = param(
        "1M", help="numpy arrays bigger than this (bytes, or '500K', '1M', '1G') reach process workers "
        "as read-only memory maps instead of copies; null: never memmap")
    verbose: int = param(0, min=0, max=100, help="joblib's own progress lines on stderr; 0: none")

    def __post_init__(self) -> None:
        if isinstance(self.max_nbytes, str) and not re.fullmatch(r"\d+(\.\d+)?[KMG]", self.max_nbytes):
            raise ConfigError(f"backend.max_nbytes: expected bytes as an integer or a size such as "
                              f"'500K', '1M', '2G', got {self.max_nbytes!r}")
        if self.inner in BRIDGES:
            module, extra = BRIDGES[self.inner]
            if importlib.util.find_spec(module) is None:
                raise ConfigError(f"backend.inner: joblib's {self.inner!r} bridge needs {module}, which is "
                                  f"not installed; pip install 'runners[{extra}]', or use inner 'loky'")


class JoblibBackend(Backend):
    """Runs batches with `joblib.Parallel`, one `delayed(run_batch)(batch)` per runners batch.

    `separate_processes` is True for every inner back-end (a class attribute cannot vary): with
    `threading` this only means the task must pickle, which it must for the others anyway.
    """

    name = "joblib"
    Options = JoblibOptions
    requires = ("joblib",)
    install = "pip install 'runners[joblib]'"
    separate_processes = True
    pickles_items = True
    lost_items = "in flight"  # a dead worker fails the whole Parallel call: every batch in flight
    items_by_value = True  # batches are cloudpickled, as loky sends functions

    def start(self) -> None:
        import joblib  # noqa: F401 - fail here, not mid-run, if it is broken

        self._config: dict[str, Any] = {"backend": self.options.inner}
        if self.options.inner in LOCAL_PROCESSES:
            # joblib hands these to the pool it makes (loky's executor, multiprocessing's Pool), so
            # prepare_worker runs once in each worker process, never in this one: its workers then
            # refuse nested pools, cap BLAS threads and exit when this process dies (even SIGKILLed).
            self._config["initializer"] = prepare_worker
        # Memmaps go to a folder of this run (not joblib's shared /dev/shm default), removed at
        # shutdown even when a killed worker kept joblib from cleaning up (if SIGKILLed: next run's).
        self._temp = scratch_folder("joblib")
        self.on_shutdown(shutil.rmtree, self._temp, ignore_errors=True)
        self._broken = False  # a worker died: its semaphores may be left in /dev/shm
        if self.options.inner == "dask":
            self._start_dask()
        elif self.options.inner == "ray":
            self._start_ray()
        elif self.options.inner == "loky":
            self.on_shutdown(self._stop_loky)
            # loky starts its workers at the first call and keeps them (the executor is reusable):
            # make that call now, so that spawning them and importing runners (~0.5 s on 2 cores)
            # counts as start-up, as it does for the other pools, instead of as the first batches.
            from joblib import delayed

            self._parallel("list")(delayed(os.getpid)() for _ in range(self.workers))

    def _start_dask(self) -> None:
        import logging

        import dask
        from distributed import Client, LocalCluster

        # dask's scratch space goes to this run's folder too (its default is left in TMPDIR)
        with dask.config.set({"temporary-directory": self._temp}):
            # The scheduler serves HTTP (health, metrics) even without a dashboard: on loopback too.
            self._cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, host="127.0.0.1",
                                         silence_logs=logging.ERROR, local_directory=self._temp,
                                         env=worker_environment(),
                                         scheduler_kwargs={"dashboard": False,
                                                           "dashboard_address": "127.0.0.1:0"})
        self.on_shutdown(self._cluster.close)
        self._config["client"] = client = Client(self._cluster, set_as_default=False)
        self.on_shutdown(client.close)

    def _start_ray(self) -> None:
        import ray
        from ray.util.joblib import register_ray

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        register_ray()
        self.max_batch_bytes = load_backend("ray").max_batch_bytes  # the results travel as Ray's do
        if ray.is_initialized():  # a Ray the caller started is theirs to keep
            return
        # A Ray that ray.init starts here would listen on every interface: the ray back-end takes the
        # care a private instance needs (loopback, token), so this bridge only joins a running Ray.
        if not os.environ.get("RAY_ADDRESS"):
            raise ConfigError(
                "backend.inner=ray: runners does not start Ray for joblib's bridge (it would listen on "
                "every interface); use --backend ray for a private instance, or start Ray yourself "
                "(`ray start --head`) and set RAY_ADDRESS to join it")
        self.on_shutdown(ray.shutdown)  # our connection closes; the cluster stays up
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False, configure_logging=False)

    def _parallel(self, return_as: str) -> Any:
        from joblib import Parallel, parallel_config

        with parallel_config(**self._config):  # the inner back-end and its client, for this Parallel
            return Parallel(n_jobs=self.workers, return_as=return_as, batch_size=self.options.batch_size,
                            max_nbytes=self.options.max_nbytes, verbose=self.options.verbose,
                            pre_dispatch="2*n_jobs", temp_folder=self._temp)

    def run(self, batches: Iterator[Batch]) -> Iterator[BatchResult]:
        if self.options.inner in STREAMING:
            return self._stream(batches)
        return self._windows(batches)

    def _stream(self, batches: Iterator[Batch]) -> Iterator[BatchResult]:
        lock = threading.Lock()  # joblib pulls batches from its callback thread
        refused: deque[BatchResult] = deque()  # batches that cannot travel: their outcomes, at once

        def dispatch(held: dict[int, Batch]) -> Iterator[Any]:
            for batch in batches:
                if (call := self._call(batch, refused)) is not None:
                    with lock:
                        held[batch.id] = batch
                    yield call

        while True:  # a broken pool ends one Parallel call; a fresh one takes the batches left
            held: dict[int, Batch] = {}  # dispatched and not back yet, to report them if the pool breaks
            failure = None
            # Parallel consumes dispatch() lazily: pre_dispatch batches now, one more as each completes.
            outputs = self._parallel("generator_unordered")(dispatch(held))
            try:
                for result in outputs:
                    with lock:
                        held.pop(result.batch_id, None)
                    yield result
                    while refused:
                        yield refused.popleft()
            except Exception as exc:  # noqa: BLE001 - joblib re-raises pool failures here, not per batch
                failure = exc
            finally:
                with warnings.catch_warnings():  # closing early cancels the rest: that is the intent
                    warnings.filterwarnings("ignore", message=".*(not used|have been cancelled)")
                    outputs.close()
            while refused:
                yield refused.popleft()
            if failure is None:
                return
            with lock:
                lost = sorted(held.values(), key=lambda b: b.start)
            for batch in lost:
                yield self._failure(failure, batch, lost)

    def _windows(self, batches: Iterator[Batch]) -> Iterator[BatchResult]:
        """joblib's multiprocessing and ray back-ends cannot stream: run 2 batches per worker at a time."""
        refused: deque[BatchResult] = deque()
        with self._parallel("list") as parallel:  # one pool for every window
            while window := list(islice(batches, 2 * self.workers)):
                calls = [(batch, self._call(batch, refused)) for batch in window]
                sent = [batch for batch, call in calls if call is not None]
                try:
                    results = parallel(call for _, call in calls if call is not None)
                except Exception as exc:  # noqa: BLE001 - as in _stream; joblib readies a new pool
                    results = [self._failure(exc, batch, sent) for batch in sent]
                yield from refused
                refused.clear()
                yield from results

    def _call(self, batch: Batch, refused: deque[BatchResult]) -> Any:
        """The joblib call that runs `batch`: with threads the batch itself; for other processes it is
        pickled here and unpickled by the worker (an argument whose unpickling raises would break a
        pool, a lost worker, and hide its message), its numpy arrays beside the bytes, where joblib
        still memory-maps the large ones. None, and its outcome in `refused`, if it cannot travel."""
        import cloudpickle  # loky's own pickler: functions of __main__ and lambdas go by value
        from joblib import delayed

        if self.options.inner == "threading":
            return delayed(run_batch)(batch)
        try:
            return delayed(run_pickled_batch)(pickle_batch(batch, cloudpickle.Pickler, apart=_plain_array))
        except Exception as exc:  # noqa: BLE001 - whatever keeps it from pickling
            refused.append(transport_failure(batch, exc, self.name))
            return None

    def _failure(self, exc: Exception, batch: Batch, out: list[Batch]) -> BatchResult:
        """A pool failure as the outcome of `batch`, one of the batches `out` when it happened: joblib
        fails them all and cannot tell which of them the dead worker held."""
        if isinstance(exc, BrokenExecutor) or type(exc).__name__ in ("KilledWorker", "RayActorError"):
            self._broken = True
            items = sorted(i for b in out for i in b.indices)
            return BatchResult(batch.id, [], WorkerLost(str(exc).strip(), self.name, items, exact=False))
        return transport_failure(batch, exc, self.name)

    def _stop_loky(self) -> None:
        stop_reusable_executor()
        if self._broken:
            unlink_orphaned_loky_semaphores()


def _plain_array(obj: Any) -> bool:
    """A numpy array of plain values: it travels beside the pickled batch, for joblib to memory-map
    when large. Object arrays stay in the bytes: their elements are what may fail to unpickle."""
    numpy = sys.modules.get("numpy")  # none loaded: no arrays to look for
    return numpy is not None and isinstance(obj, numpy.ndarray) and not obj.dtype.hasobject
