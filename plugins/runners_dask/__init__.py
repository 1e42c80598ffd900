"""The `dask` back-end: dask.distributed, on a private LocalCluster or a running `dask scheduler`."""

from __future__ import annotations

import ipaddress
import logging
import re
import shutil
import socket
import sys
import sysconfig
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from runners import (
    Backend,
    Batch,
    BatchResult,
    ConfigError,
    ItemFailure,
    RunnersError,
    WorkerLost,
    param,
    portable_exception,
    run_batch,
    scratch_folder,
    worker_environment,
)

from ._probe import check_scheduler

ADDRESS = re.compile(r"((tcp|tls)://)?(\[[0-9a-fA-F:.]+\]|[^\s:/\[\]]+):\d{1,5}")
LOOPBACK = "127.0.0.1"


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
                                  "such as 127.0.0.1:8787; null: no dashboard")
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
        _check_local_address(self.bind)


def _ready() -> bool:
    return True  # unpickling this function imports runners_dask, and so runners, on the worker


def run_on_worker(batch: Batch, pack: bool) -> BatchResult:
    """`run_batch`, labelled with the dask worker's address so placement shows workers, not hosts."""
    from distributed import get_worker

    result = run_batch(batch, pack=pack)
    result.node = get_worker().address
    return result


class DaskBackend(Backend):
    """Submits one dask task per batch, a bounded number at a time, and yields them as they finish.

    With `address`, `workers` becomes the cluster's thread count: the cluster decides, not the flag.
    """

    name = "dask"
    Options = DaskOptions
    requires = ("distributed",)
    extra = "dask"
    separate_processes = True  # with processes=false too: remote clusters need pickling anyway
    distributed = True

    def start(self) -> None:
        self._client = self._cluster = None
        self._shipped: set[str] = set()
        if self.options.address is None:
            self._start_local_cluster()
        else:
            self._join()
        # Every worker imports runners (~0.3 s) now, as part of start-up, instead of in its first batch.
        self._client.run(_ready)

    def _join(self) -> None:
        import dask
        from distributed import Client

        address, timeout = self.options.address, self.options.connect_timeout
        check_scheduler(address, timeout)
        try:
            with dask.config.set({"distributed.comm.timeouts.connect": f"{timeout}s"}):
                self._client = Client(address, timeout=timeout, set_as_default=False)
            self._client.wait_for_workers(1, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            problem = f"has no workers after {timeout:g} s" if self._client is not None else "did not answer"
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
        self._temp = scratch_folder("dask")
        with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                              "temporary-directory": self._temp}):  # the scheduler's scratch space
            self._cluster = LocalCluster(local_directory=self._temp,
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
        self._client = Client(self._cluster, set_as_default=False)
        if self.options.bind != LOOPBACK:  # a logging warning: one plain line on stderr, stdout untouched
            logging.getLogger(__name__).warning(
                "runners: the dask LocalCluster of this run listens on %s (scheduler %s, and its "
                "workers): plain tcp:// has no authentication, anyone who can reach that address can run "
                "code as this user; use it only on a private network, or run your own scheduler and "
                "workers with TLS and join them with backend.address", self.options.bind,
                self._cluster.scheduler_address)

    def run(self, batches: Iterator[Batch]) -> Iterator[BatchResult]:
        from distributed import as_completed

        in_flight = self.options.in_flight or 2 * self.workers
        run_id = uuid.uuid4().hex[:8]
        pending: dict[Any, Batch] = {}
        finished = as_completed(loop=self._client.loop)
        travels = self.options.processes or self.options.address is not None  # else: threads here

        def submit(batch: Batch) -> None:
            if self.options.address is not None:
                self._ship(batch.fn)
            future = self._client.submit(run_on_worker, batch, travels, pure=False,
                                         key=f"runners-{run_id}-batch-{batch.id}")
            pending[future] = batch
            finished.add(future)

        try:
            for batch in islice(batches, in_flight):
                submit(batch)
            for future in finished:
                batch = pending.pop(future)
                yield self._outcome(future, batch)
                following = next(batches, None)
                if following is not None:
                    submit(following)
        finally:
            finished.clear()
            if pending:  # stopped early (an error, Ctrl-C): the cluster drops what is left
                self._client.cancel(list(pending), force=True)

    def _outcome(self, future: Any, batch: Batch) -> BatchResult:
        from distributed import KilledWorker

        if future.status == "finished":
            return future.result()
        indices = list(range(batch.start, batch.start + len(batch.items)))
        if future.status == "cancelled":
            return BatchResult(batch.id, [], WorkerLost("dask cancelled the batch (lost the scheduler?)",
                                                        self.name, indices))
        exc = future.exception()
        if exc is None:  # 'lost' and similar states carry no exception: the worker went with the batch
            return BatchResult(batch.id, [], WorkerLost(f"dask lost the batch (future {future.status})",
                                                        self.name, indices))
        if isinstance(exc, KilledWorker):
            worker = getattr(exc.last_worker, "address", exc.last_worker)
            return BatchResult(batch.id, [], WorkerLost(f"dask worker {worker} died while running it "
                                                        "(KilledWorker)", self.name, indices))
        # run_batch catches item errors: this is the batch failing to travel to or from the worker.
        failure = ItemFailure(batch.start, batch.items[0] if batch.items else None,
                              portable_exception(exc), "".join(traceback.format_exception(exc)))
        return BatchResult(batch.id, [], failure)

    def _ship(self, fn: Any) -> None:
        """Send the task's module to the workers if it is a loose .py file (`runners exec my.py`)."""
        module = sys.modules.get(getattr(fn, "__module__", ""))
        path = getattr(module, "__file__", None)
        if module is None or path is None or path in self._shipped:
            return
        self._shipped.add(path)
        installed = {Path(p).resolve() for p in sysconfig.get_paths().values()}
        resolved = Path(path).resolve()
        if "." in module.__name__ or hasattr(module, "__path__") or resolved.suffix != ".py" or any(
                resolved.is_relative_to(root) for root in installed):
            return  # a package or an installed module: the workers import it themselves
        self._client.upload_file(str(resolved))

    def shutdown(self) -> None:
        client, self._client = getattr(self, "_client", None), None
        cluster, self._cluster = getattr(self, "_cluster", None), None
        if client is not None:
            client.close()
        if cluster is not None:  # only one we started: a joined cluster keeps running
            cluster.close()
        temp, self._temp = getattr(self, "_temp", None), None
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip  # dask takes an IPv6 host in brackets


def _check_local_address(value: str) -> None:
    """Raise a ConfigError unless `value` is an IP address of this machine or a wildcard."""
    import psutil

    # link-local IPv6 addresses need a %interface scope that a listen address cannot carry: left out
    mine = {ipaddress.ip_address(a.address) for nic in psutil.net_if_addrs().values() for a in nic
            if a.family in (socket.AF_INET, socket.AF_INET6) and "%" not in a.address}
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        ip = None
    if ip is None or not (ip in mine or ip.is_unspecified):
        valid = ", ".join(sorted(map(str, mine), key=lambda a: (":" in a, a)))
        raise ConfigError(f"backend.bind: {value!r} is not an IP address of this machine; expected one "
                          f"of {valid}, or 0.0.0.0 (every interface)")
