"""The `ray` back-end: one Ray task per batch, on a private local instance or on a cluster you name."""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from runners.backend import (
    Backend,
    Batch,
    BatchResult,
    ConfigError,
    DriverInterrupt,
    Handles,
    Parcel,
    RunnersError,
    WorkerLost,
    environment,
    in_flight,
    keep_signal_handlers,
    loose_modules,
    param,
    pickle_batch,
    run_pickled_batch,
    scratch_folder,
    transport_failure,
)

from ._compat import loopback_only, private_instance, raylet_messages_to_stderr
from ._setup import is_loopback, probe, use_token_auth, user_paths

OBJECT_STORE_MIN_MB = 75  # Ray refuses a smaller object store
MIN_RAY = (2, 52)  # token authentication and the 2025 security fixes
LOOPBACK = "127.0.0.1"
# A Ray of our own returns results of up to 1 MiB inline, and batches are cut at half that: their
# bytes are an estimate (from samples), and a result carries a little more than its values. At
# 90 KiB, 1,000,000 tiny items took ~70 batches, each paying Ray's ~2 ms per task, and ran 1.3-1.6x
# slower than 8 batches of 125,000; at 512 KiB, ~20 batches and within 1.10. Beyond that the
# driver's RSS grew with the item count (1.5 MiB: 123 -> 150 MB from 100,000 to 10,000,000 items;
# 512 KiB: 123 -> 135).
PRIVATE_INLINE_BYTES = 2**20
PRIVATE_BATCH_BYTES = 512 * 1024


@dataclass(frozen=True)
class RayOptions:
    address: str | None = param(
        None, help="null: start a private Ray on 127.0.0.1 for this run (or join $RAY_ADDRESS if set); "
                   "'local': always private; 'auto', 'host:port' or 'ray://host:port': join that cluster")
    connect_timeout: float = param(15.0, min=0.1, help="seconds to wait for a cluster address to answer")
    in_flight: int | None = param(None, min=1, help="batches submitted at once; null: twice the CPUs")
    num_cpus: float = param(1.0, min=0.0, help="CPUs each batch task reserves on its node")
    max_retries: int = param(0, min=0, help="Ray's own reruns of a batch whose worker died "
                                            "(0: leave retries to runners' `retries` policy)")
    object_store_mb: int = param(100, min=OBJECT_STORE_MIN_MB, help="object store of a private instance, MiB")
    ship_code: bool = param(True, help="when joining a cluster, send the task's file and the files and "
                                       "packages it imports that are not installed (runtime_env py_modules)")
    runtime_env: dict[str, Any] | None = param(
        None, help="a Ray runtime_env for the tasks (pip, env_vars, working_dir...)")
    temp_dir: str | None = param(
        None, help="folder for a private instance's session (logs, sockets), kept after the run; null: "
                   "a folder of this run's, removed at shut-down")
    bind: str = param(LOOPBACK, help="address the private instance listens on: 127.0.0.1 only (Ray "
                                     "cannot listen on just one other address; see README, Security)")

    def __post_init__(self) -> None:
        # Measured with Ray 2.60: given any node address but 127.0.0.1, the GCS, raylet and workers
        # listen on every interface (::), not only that one, and the metrics exporters serve 0.0.0.0
        # without the token. So a private instance stays on loopback; sharing Ray is `ray start`'s job.
        if self.bind == LOOPBACK:
            return
        if self.address is not None:
            raise ConfigError(f"backend.bind={self.bind!r} contradicts backend.address={self.address!r}: "
                              "bind is for the instance runners starts, address joins a running one")
        raise ConfigError(
            f"backend.bind: ray can start its private instance on {LOOPBACK} only, got {self.bind!r}: "
            "given any other address, Ray listens on every interface of this machine (not only that "
            "one) and serves its metrics there without authentication; to share Ray, start it with "
            "`ray start --head --node-ip-address=IP` (token authentication on) and join it with "
            "backend.address")


def _ready() -> bool:
    return True  # unpickling this function imports runners_ray, and so runners, on the worker


def run_on_node(parcel: Parcel) -> BatchResult:
    """What a Ray worker runs: the batch, labelled with the Ray node that ran it."""
    import ray

    result = run_pickled_batch(parcel)
    node_id = ray.get_runtime_context().get_node_id()
    result.node = f"{node_id[:12]}@{ray.util.get_node_ip_address()}"
    return result


class RayBackend(Backend):
    """Runs each batch as a Ray task, at most `in_flight` at once, and yields them as they finish."""

    name = "ray"
    Options = RayOptions
    requires = ("ray",)
    install = "pip install 'runners[ray]'"
    separate_processes = True
    pickles_items = True
    distributed = True
    lost_items = "batch"  # Ray's error for each task the dead worker (or node) held
    items_by_value = True  # batches are cloudpickled, as Ray sends functions
    startup_seconds = 45.0  # a private instance: 6-15 s alone, 30 s and more beside other work
    # Results under Ray's inline limit (100 KiB by default) come back in the task's reply; bigger ones
    # go through the plasma object store, whose pages the driver maps and keeps: its RSS grew 123 -> 156
    # MB from 100,000 to 10,000,000 tiny items at 1.5 MB batches, 123 -> 128 MB at these. A private
    # Ray gets a larger limit (PRIVATE_INLINE_BYTES) and takes larger batches; a joined one keeps this.
    max_batch_bytes: int | None = 90 * 1024

    def start(self) -> None:
        import ray

        if _version(ray.__version__) < MIN_RAY:
            raise ConfigError(f"ray {ray.__version__} lacks the 2025 security fixes; "
                              "pip install -U 'ray[default]>=2.52'")
        self._ray = ray
        raylet_messages_to_stderr()
        address = self.options.address or os.environ.get("RAY_ADDRESS") or "local"
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
        if address == "local" and not ray.is_initialized():
            self._start_private(ray, quiet)
        else:
            if not ray.is_initialized():
                self._join(ray, address, quiet)
            # else the caller's own Ray session: use it and leave it as it is (not ours to shut down)
            # A cluster that is already running decides how many run at once, not --workers.
            self.workers = max(1, int(ray.cluster_resources().get("CPU", 0)))
        cpus = self.workers
        self._in_flight = self.options.in_flight or 2 * cpus
        self._task_options = {"num_cpus": self.options.num_cpus, "max_retries": self.options.max_retries,
                              "retry_exceptions": False}
        self._remote = ray.remote(run_on_node).options(**self._task_options)
        # Every worker imports runners (~0.3 s) now, as part of start-up, instead of in its first batch:
        # one task per CPU, all at once, so each lands on a worker of its own.
        ready = ray.remote(_ready).options(num_cpus=self.options.num_cpus or 1)
        ray.get([ready.remote() for _ in range(cpus)])

    def _start_private(self, ray: ModuleType, quiet: dict[str, Any]) -> None:
        use_token_auth()
        # Ray keeps every session's logs and sockets under /tmp/ray for good; a run's own folder is
        # removed at shut-down unless the user asked for a place to keep them (to read the logs).
        temp = self.options.temp_dir
        if temp is None:
            temp = scratch_folder("ray", os.environ.get("RAY_TMPDIR"))  # short: sockets fit 107 bytes
            self.on_shutdown(shutil.rmtree, temp, ignore_errors=True)
        self.on_shutdown(ray.shutdown)  # the private instance stops with it
        try:
            # The raylet passes its environment to the workers it forks: the driver's own folders (the
            # task file's folder, the project) reach them this way, without a slow runtime_env. Every
            # process of the instance binds to 127.0.0.1; Ctrl-C and SIGTERM stay runners'.
            with (environment({"PYTHONPATH": os.pathsep.join(user_paths())}), loopback_only(),
                  keep_signal_handlers()):
                ray.init(address="local", num_cpus=self.workers, num_gpus=0, include_dashboard=False,
                         object_store_memory=self.options.object_store_mb * 2**20,
                         runtime_env=self.options.runtime_env,
                         **private_instance(self.options.bind, temp, PRIVATE_INLINE_BYTES), **quiet)
            self.max_batch_bytes = PRIVATE_BATCH_BYTES
        except Exception as exc:  # noqa: BLE001 - a failed start is one error to the user, whatever Ray raised
            # Our own folder names this instance alone; a folder the user gave may be another's too.
            _end_processes_naming(temp, everywhere=self.options.temp_dir is None)
            raise RunnersError(f"ray: could not start a local Ray instance: {exc}") from exc

    def _join(self, ray: ModuleType, address: str, quiet: dict[str, Any]) -> None:
        # Ray itself retries an address that does not answer for minutes; a TCP probe fails fast.
        probe(address, self.options.connect_timeout)
        env = dict(self.options.runtime_env or {})
        # The task (a file of the user's, already imported by now) must reach the other machines;
        # Ray accepts local modules to upload only here, for the whole job, not per task.
        modules = [str(path) for path in loose_modules()] if self.options.ship_code else []
        if modules:
            env["py_modules"] = [*env.get("py_modules", []), *modules]
        try:
            # a loopback address is dialled as given, not swapped for the machine's LAN address
            with loopback_only() if is_loopback(address) else nullcontext(), keep_signal_handlers():
                ray.init(address=address, runtime_env=env or None, **quiet)
        except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
            raise RunnersError(f"ray: cannot join the Ray cluster at {address!r}: {exc}") from exc
        self.on_shutdown(ray.shutdown)  # our connection closes; the cluster itself stays up

    def run(self, batches: Iterator[Batch]) -> Iterator[BatchResult]:
        return in_flight(RayTasks(self._ray, self._remote), batches, self._in_flight)


class RayTasks(Handles[Any]):
    """Ray object refs of batch tasks, as the in-flight loop waits on them."""

    def __init__(self, ray: ModuleType, remote: Any) -> None:
        super().__init__("ray")
        self.ray = ray
        self.remote = remote

    def submit(self, batch: Batch) -> Any:
        from ray import cloudpickle  # Ray's own pickler: functions of __main__ and lambdas go by value

        return self.remote.remote(pickle_batch(batch, cloudpickle.Pickler))

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        try:
            # Ray's wait lets only KeyboardInterrupt out while it waits, so what another signal handler
            # raised (SIGTERM, the run's time limit) surfaces when it returns, as a SystemError
            # caused by it.
            return self.ray.wait(handles, num_returns=1, timeout=timeout)[0]
        except SystemError as exc:
            if isinstance(exc.__cause__, DriverInterrupt):
                raise exc.__cause__ from None
            raise

    def outcome(self, handle: Any, batch: Batch) -> BatchResult:
        lost = self.ray.exceptions
        try:
            return self.ray.get(handle)
        except (lost.WorkerCrashedError, lost.NodeDiedError, lost.RayActorError, lost.ObjectLostError,
                lost.LocalRayletDiedError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return BatchResult(batch.id, [], WorkerLost(f"{type(exc).__name__}: {reason}", "ray"))
        except lost.RayTaskError as exc:  # items raise inside the task: this is the batch not travelling
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            return transport_failure(batch, cause, "ray")
        except lost.RuntimeEnvSetupError as exc:
            raise RunnersError(f"ray: could not set up the task's runtime_env: {exc}") from exc

    def cancel(self, handles: list[Any]) -> None:
        for ref in handles:
            self.ray.cancel(ref, force=True)  # a joined cluster must not keep running abandoned work


def _end_processes_naming(folder: str, everywhere: bool, grace: float = 5.0) -> None:
    """End what a failed ray.init started (its GCS, raylet, agents: Ray waits 30 s for a raylet that
    a loaded machine starts slowly). ray.shutdown() stops only an instance that came up, and these would
    live until this interpreter exits. Every one of them names the instance's folder on its command
    line. Looked for again until none is left, and, when the folder is this run's own, among all
    processes: the raylet may still be starting agents, which outlive it as orphans (no longer this
    process's children), writing into the folder."""
    import psutil

    def naming_it() -> list[psutil.Process]:
        candidates = psutil.process_iter() if everywhere else psutil.Process().children(recursive=True)
        found = []
        for process in candidates:
            with suppress(psutil.Error):
                if process.pid != os.getpid() and any(folder in arg for arg in process.cmdline()):
                    found.append(process)
        return found

    deadline = time.monotonic() + 4 * grace
    while (started := naming_it()) and time.monotonic() < deadline:
        for process in started:
            with suppress(psutil.Error):
                process.terminate()
        _, alive = psutil.wait_procs(started, timeout=grace)
        for process in alive:
            with suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(alive, timeout=grace)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())
