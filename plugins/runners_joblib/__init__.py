"""The `joblib` back-end: joblib.Parallel, with its inner back-ends, batching and memmapping."""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
import re
import shutil
import socket
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator
from concurrent.futures import BrokenExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Any, Literal

from runners import (
    Backend,
    Batch,
    BatchResult,
    ConfigError,
    ItemFailure,
    WorkerLost,
    load_backend,
    param,
    portable_exception,
    prepare_worker,
    run_batch,
    scratch_folder,
    worker_environment,
)

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
    extra = "joblib"
    separate_processes = True

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
        if self.options.inner == "dask":
            self._start_dask()
        elif self.options.inner == "ray":
            self._start_ray()
        elif self.options.inner == "loky":
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
        self._client = Client(self._cluster, set_as_default=False)
        self._config["client"] = self._client

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
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False, configure_logging=False)
        self._ray_started = True  # our connection to close; the cluster stays up

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

        def dispatch(held: dict[int, Batch]) -> Iterator[Any]:
            for batch in batches:
                with lock:
                    held[batch.id] = batch
                yield self._call(batch)

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
            except Exception as exc:  # noqa: BLE001 - joblib re-raises pool failures here, not per batch
                failure = exc
            finally:
                with warnings.catch_warnings():  # closing early cancels the rest: that is the intent
                    warnings.filterwarnings("ignore", message=".*(not used|have been cancelled)")
                    outputs.close()
            if failure is None:
                return
            self._broken = True
            with lock:
                lost = sorted(held.values(), key=lambda b: b.start)
            for batch in lost:
                yield self._failure(failure, batch, lost)

    def _windows(self, batches: Iterator[Batch]) -> Iterator[BatchResult]:
        """joblib's multiprocessing and ray back-ends cannot stream: run 2 batches per worker at a time."""
        with self._parallel("list") as parallel:  # one pool for every window
            while window := list(islice(batches, 2 * self.workers)):
                try:
                    results = parallel(self._call(batch) for batch in window)
                except Exception as exc:  # noqa: BLE001 - as in _stream; joblib readies a new pool
                    results = [self._failure(exc, batch, window) for batch in window]
                yield from results

    def _call(self, batch: Batch) -> Any:
        """The joblib call that runs `batch`: in worker processes, as bytes the worker unpickles itself.

        A pool unpickles its arguments before any of our code runs, so an argument whose unpickling
        raises would break the pool (a lost worker, retried) and hide its message; unpickled in
        run_payload, it is the batch's own failure. numpy arrays stay out of the bytes and travel
        beside them, where joblib still memory-maps the large ones.
        """
        from joblib import delayed

        travels = self.options.inner != "threading"  # the values go back to this process: pack them
        if self.options.inner not in LOCAL_PROCESSES:  # threads share the batch; dask, ray: their own
            return delayed(run_batch)(batch, pack=travels)
        try:
            payload, arrays = _dumps(batch)
        except Exception:  # noqa: BLE001 - joblib's own pickling then reports it, as it always has
            return delayed(run_batch)(batch, pack=True)
        return delayed(run_payload)(batch.id, payload, arrays)

    def _failure(self, exc: Exception, batch: Batch, out: list[Batch]) -> BatchResult:
        """A pool failure as the outcome of `batch`, one of the batches `out` when it happened: joblib
        fails them all and cannot tell which of them the dead worker held."""
        if isinstance(exc, BrokenExecutor) or type(exc).__name__ in ("KilledWorker", "RayActorError"):
            items = sorted(i for b in out for i in range(b.start, b.start + len(b.items)))
            return BatchResult(batch.id, [], WorkerLost(str(exc).strip(), self.name, items, exact=False))
        failure = ItemFailure(batch.start, batch.items[0] if batch.items else None,
                              portable_exception(exc), "".join(traceback.format_exception(exc)))
        return BatchResult(batch.id, [], failure)

    def shutdown(self) -> None:
        if self.options.inner == "loky" and getattr(self, "_config", None) is not None:
            # loky keeps its workers for reuse after Parallel returns; stop them (and joblib's
            # memmapping folder) so nothing outlives the run. With no executor this makes an
            # empty one, which starts no process.
            from joblib.externals.loky import get_reusable_executor

            executor = get_reusable_executor(reuse=True)
            if hasattr(executor, "terminate"):  # joblib's MemmappingExecutor: also cleans its folder
                executor.terminate()
            else:
                executor.shutdown(wait=True)
            if getattr(self, "_broken", False):
                _unlink_orphaned_loky_semaphores()
        client, self._client = getattr(self, "_client", None), None
        cluster, self._cluster = getattr(self, "_cluster", None), None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        if getattr(self, "_ray_started", False):
            import ray

            ray.shutdown()
            self._ray_started = False
        self._config = None
        temp, self._temp = getattr(self, "_temp", None), None
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


def _dumps(batch: Batch) -> tuple[bytes, list[Any]]:
    """`batch` pickled (by cloudpickle, as loky would), less the numpy arrays it holds, listed apart."""
    try:
        import cloudpickle  # what loky pickles with; joblib 1.6 depends on it, older ones vendor it
    except ImportError:
        from joblib.externals import cloudpickle

    numpy = sys.modules.get("numpy")  # no numpy loaded: the batch holds no array
    if numpy is None:
        return cloudpickle.dumps(batch), []
    arrays: list[Any] = []
    seen: dict[int, int] = {}  # an array met twice travels once, and is one object again on arrival

    class Pickler(cloudpickle.Pickler):
        def persistent_id(self, obj: Any) -> int | None:
            # object arrays stay in the bytes: their elements are what may fail to unpickle
            if isinstance(obj, numpy.ndarray) and not obj.dtype.hasobject:
                if id(obj) not in seen:
                    seen[id(obj)] = len(arrays)
                    arrays.append(obj)
                return seen[id(obj)]
            return None

    buffer = io.BytesIO()
    Pickler(buffer).dump(batch)
    return buffer.getvalue(), arrays


def run_payload(batch_id: int, payload: bytes, arrays: list[Any]) -> BatchResult:
    """`runners.run_pickled_batch` for a batch pickled by `_dumps`, its arrays given back in place."""
    unpickler = pickle.Unpickler(io.BytesIO(payload))
    unpickler.persistent_load = arrays.__getitem__
    try:
        batch = unpickler.load()
    except BaseException as exc:  # noqa: BLE001 - whatever unpickling raises is this batch's failure
        failure = ItemFailure(-1, None, portable_exception(exc),
                              "".join(traceback.format_exception(exc)) + "(while unpickling the batch)")
        return BatchResult(batch_id, [], failure, socket.gethostname(), os.getpid())
    return run_batch(batch, pack=True)


def _unlink_orphaned_loky_semaphores() -> None:
    """Semaphores a killed loky worker held stay in /dev/shm until the interpreter exits; with every
    executor of this process shut down, none of them is in use, so remove them now."""
    import _multiprocessing
    from pathlib import Path

    for path in Path("/dev/shm").glob(f"sem.loky-{os.getpid()}-*"):
        try:
            _multiprocessing.sem_unlink("/" + path.name[len("sem."):])
        except OSError:
            pass
