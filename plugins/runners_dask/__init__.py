"""The `dask` back-end: dask.distributed, on a private LocalCluster or a running `dask scheduler`."""

from __future__ import annotations

import logging
import queue
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runners.backend import (
    Backend,
    Batch,
    BatchResult,
    ConfigError,
    Handles,
    Parcel,
    RunnersError,
    WorkerLost,
    check_listen_address,
    in_flight,
    loose_modules,
    param,
    pickle_batch,
    run_batch,
    run_pickled_batch,
    scratch_folder,
    transport_failure,
    worker_environment,
)

from ._probe import check_scheduler
from ._removals import WorkerRemovals

ADDRESS = re.compile(r"((tcp|tls)://)?(\[[0-9a-fA-F:.]+\]|[^\s:/\[\]]+):\d{1,5}")
LOOPBACK = "127.0.0.1"
KEY_PREFIX = "runners-"  # of every batch task's key


@dataclass(frozen=True)
class DaskOptions:
    address: str | None = param(
        None, help="join this running scheduler, tcp://HOST:PORT, and leave it running; "
        "null: start a private LocalCluster on 127.0.0.1 and stop it afterwards")
    connect_timeout: float = param(5.0, min=0.1, max=600, help="seconds to wait for the scheduler "
                                   "at `address` (and for its first worker)")
    processes: bool = param(True, help="LocalCluster workers are processes; false: threads of this "
                            "process (no pickling, but the GIL)")
    in_flight: int | None = param(None, min=1, help="batches submitted at a time; null: 2 per worker thread")
    dashboard: str | None = param(None, help="serve the LocalCluster's dashboard at this address, "
                                  "such as 127.0.0.1:8787, and profile its workers for it; null: no "
                                  "dashboard, no profiling")
    bind: str = param(LOOPBACK, help="address of this machine the LocalCluster's scheduler and workers "
                      "listen on; any other (a LAN address, 0.0.0.0 for all) lets anyone who reaches it "
                      "run code here: plain tcp:// has no authentication (a warning says so)")

    def __post_init__(self) -> None:
        if self.address is not None and not ADDRESS.fullmatch(self.address):
            raise ConfigError(f"backend.address: expected a scheduler address such as "
                              f"tcp://10.0.0.5:8786, got {self.address!r}")
        if self.bind == LOOPBACK:
            return
        if self.address is not None:
            raise ConfigError(f"backend.bind={self.bind!r} contradicts backend.address={self.address!r}: "
                              "bind is for the LocalCluster runners starts, address joins a running one")
        if not self.processes:
            raise ConfigError(f"backend.bind={self.bind!r} needs processes=true: thread workers talk "
                              "inside this process and listen on no address")
        check_listen_address(self.bind, "backend.bind")


def _ready() -> bool:
    return True  # unpickling this function imports runners_dask, and so runners, on the worker


def run_on_worker(work: Batch | Parcel) -> BatchResult:
    """`run_batch` (`run_pickled_batch` for a batch that travelled), labelled with the dask worker's
    address so placement shows workers, not hosts."""
    from distributed import get_worker

    result = run_pickled_batch(work) if isinstance(work, Parcel) else run_batch(work)
    result.node = get_worker().address
    return result


class DaskBackend(Backend):
    """Submits one dask task per batch, a bounded number at a time, and yields them as they finish.

    With `address`, `workers` becomes the cluster's thread count: the cluster decides, not the flag.
    """

    name = "dask"
    Options = DaskOptions
    requires = ("distributed",)
    install = "pip install 'runners[dask]'"
    separate_processes = True
    pickles_items = True  # with processes=false too: remote clusters need pickling anyway
    distributed = True
    # KilledWorker for each batch the dead worker held. (With processes=false the workers are threads
    # of the driver, whose crash ends the run: the guarantees below are those of the default.)
    lost_items = "batch"
    items_by_value = True  # batches are cloudpickled, as dask sends functions
    startup_seconds = 25.0  # a LocalCluster: 3-5 s alone, 20 s beside other work
    _zips: str | None = None  # where packages shipped to a joined cluster are zipped, once there are any

    def start(self) -> None:
        self._shipped: set[Path] = set()
        if self.options.address is None:
            self._start_local_cluster()
        else:
            self._join()
        self._removals = WorkerRemovals(self._client, KEY_PREFIX)
        self.on_shutdown(self._removals.close)
        # Every worker imports runners (~0.3 s) now, as part of start-up, instead of in its first batch.
        self._client.run(_ready)

    def _join(self) -> None:
        import dask
        from distributed import Client

        address, timeout = self.options.address, self.options.connect_timeout
        check_scheduler(address, timeout)
        client = None
        try:
            with dask.config.set({"distributed.comm.timeouts.connect": f"{timeout}s"}):
                client = self._client = Client(address, timeout=timeout, set_as_default=False)
            self.on_shutdown(client.close)  # the cluster we joined keeps running
            client.wait_for_workers(1, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            problem = f"has no workers after {timeout:g} s" if client is not None else "did not answer"
            raise RunnersError(
                f"the dask scheduler at {address!r} {problem} ({exc}); start it "
                f"with `dask scheduler` and workers with `dask worker {address}`, or fix the address"
            ) from None
        self.workers = max(1, sum(self._client.nthreads().values()))

    def _start_local_cluster(self) -> None:
        import dask
        from distributed import Client, LocalCluster

        # Loopback only; no dashboard unless asked. allowed-failures 0: the first worker death is
        # reported (as WorkerLost) at once, since retrying is the engine's decision, not dask's.
        # Workers' scratch space (spilled data, locks) in a folder of this run's, removed at shut-down
        # (or by the next run's sweep, if this one is SIGKILLed); dask's default,
        # TMPDIR/dask-scratch-space, is left behind.
        temp = scratch_folder("dask")
        self.on_shutdown(shutil.rmtree, temp, ignore_errors=True)
        # Workers sample their own stacks every 10 ms, beside the items, for the dashboard's profile
        # page: no dashboard, no sampling. And every server (scheduler, nannies, workers) times its
        # event loop every 20 ms, for the dashboard's metrics and an INFO log line that runners
        # silences: 0.05 of a core, of the 0.09-0.12 that an idle cluster used; once a second here.
        quiet = {} if self.options.dashboard is not None else {
            "distributed.worker.profile.enabled": False, "distributed.admin.tick.interval": "1s"}
        with dask.config.set({"distributed.scheduler.allowed-failures": 0, **quiet,
                              "temporary-directory": temp}):  # the scheduler's scratch space
            self._cluster = LocalCluster(local_directory=temp,
                n_workers=self.workers, threads_per_worker=1, processes=self.options.processes,
                # threads talk in-process (inproc://), which takes no host
                host=_host(self.options.bind) if self.options.processes else None,
                silence_logs=logging.CRITICAL,
                # What prepare_worker sets in pool workers, set here instead: its parent watch must
                # not run in dask workers (their nanny ends them with the cluster). Threads share
                # this process's environment, so they get none of it.
                # Ctrl-C is the driver's to handle: worker processes ignore it (see _ignore_ctrl_c).
                **({"env": worker_environment(), "preload": [f"{__name__}._ignore_ctrl_c"]}
                   if self.options.processes else {}),
                # The scheduler always serves HTTP (health, metrics); keep it on loopback and a free
                # port, and add the dashboard only when asked.
                scheduler_kwargs={"dashboard": self.options.dashboard is not None,
                                  "dashboard_address": self.options.dashboard or "127.0.0.1:0"})
        self.on_shutdown(self._cluster.close)
        # Results straight from the worker that holds them: through the scheduler (dask's default
        # outside a worker) each one crossed a second connection and the scheduler's event loop.
        self._client = Client(self._cluster, set_as_default=False, direct_to_workers=True)
        self.on_shutdown(self._client.close)
        if self.options.bind != LOOPBACK:  # a logging warning: one plain line on stderr, stdout untouched
            logging.getLogger(__name__).warning(
                "runners: the dask LocalCluster of this run listens on %s (scheduler %s, and its "
                "workers): plain tcp:// has no authentication, anyone who can reach that address can run "
                "code as this user; use it only on a private network, or run your own scheduler and "
                "workers with TLS and join them with backend.address", self.options.bind,
                self._cluster.scheduler_address)

    def run(self, batches: Iterator[Batch]) -> Iterator[BatchResult]:
        travels = self.options.processes or self.options.address is not None  # else: threads here
        if self.options.address is not None:
            self._ship_loose_modules()
        tasks = DaskTasks(self._client, uuid.uuid4().hex[:8], travels, self._removals)
        return in_flight(tasks, batches, self.options.in_flight or 2 * self.workers)

    def _ship_loose_modules(self) -> None:
        """Upload the driver's own modules (`runners exec my.py`), which the cluster's workers lack, once
        each. A package goes as a zip; upload_file imports each as it arrives, so a module's imports
        (which `loose_modules` lists first) must be there before it."""
        for path in loose_modules():
            if path not in self._shipped:
                self._shipped.add(path)
                self._client.upload_file(str(path) if path.is_file() else self._zipped(path))

    def _zipped(self, package: Path) -> str:
        if self._zips is None:
            self._zips = scratch_folder("daskzip")
            self.on_shutdown(shutil.rmtree, self._zips, ignore_errors=True)
        return shutil.make_archive(f"{self._zips}/{package.name}", "zip", package.parent, package.name)


class DaskTasks(Handles[Any]):
    """Dask futures of batch tasks, as the in-flight loop waits on them (told of each that finishes
    by its done callback: dask's own waits need a default client)."""

    def __init__(self, client: Any, run_id: str, travels: bool, removals: WorkerRemovals) -> None:
        super().__init__("dask")
        self.client, self.run_id, self.travels = client, run_id, travels
        self.removals = removals
        self._finished: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lost: dict[Any, str] = {}  # future -> the worker that left while running it

    def submit(self, batch: Batch) -> Any:
        import cloudpickle  # dask's own pickler: functions of __main__ and lambdas go by value

        work = pickle_batch(batch, cloudpickle.Pickler) if self.travels else batch
        key = f"{KEY_PREFIX}{self.run_id}-batch-{batch.id}"
        future = self.client.submit(run_on_worker, work, pure=False, key=key)
        future.add_done_callback(self._finished.put)
        return future

    def wait(self, handles: list[Any], timeout: float) -> Iterable[Any]:
        lost = self.removals.take_back(handles, self._lost)
        try:
            done = [self._finished.get(timeout=0 if lost else timeout)]
        except queue.Empty:
            return lost
        while not self._finished.empty():
            done.append(self._finished.get())
        pending = set(handles) - set(lost)
        return lost + [future for future in done if future in pending]

    def outcome(self, handle: Any, batch: Batch) -> BatchResult:
        from distributed import KilledWorker

        if handle in self._lost:
            return _worker_lost(batch, self._lost.pop(handle))
        if handle.status == "finished":  # (a result lost since then is recomputed by dask: result() waits)
            return handle.result()
        exc = handle.exception() if handle.status == "error" else None  # (on 'lost' it waits for a rerun)
        if exc is not None and not isinstance(exc, KilledWorker):
            return transport_failure(batch, exc, "dask")  # items raise inside the task: this is travel
        # KilledWorker names the worker; a batch whose result died with its worker before the driver
        # fetched it ('lost') does not, and the scheduler's removal event does.
        worker = self.removals.worker_of(handle.key)
        if isinstance(exc, KilledWorker):
            worker = getattr(exc.last_worker, "address", exc.last_worker)
        if worker is not None:
            return _worker_lost(batch, worker)
        reason = ("dask cancelled the batch (lost the scheduler?)" if handle.status == "cancelled"
                  else f"dask lost the batch (future {handle.status})")
        return BatchResult(batch.id, [], WorkerLost(reason, "dask"))

    def cancel(self, handles: list[Any]) -> None:
        self.client.cancel(handles, force=True)  # stopped early (an error, Ctrl-C): the cluster drops them


def _worker_lost(batch: Batch, worker: str) -> BatchResult:
    # The same words for every batch one death took, however it was told: the run counts deaths by them.
    return BatchResult(batch.id, [], WorkerLost(f"dask worker {worker} left the cluster while it held "
                                                "the batch (it died, or was cut off)", "dask"))


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip  # dask takes an IPv6 host in brackets
