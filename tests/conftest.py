"""Shared fixtures: the live back-end registry, CLI runs in subprocesses, and the orphan checks."""

from __future__ import annotations

import multiprocessing.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

import runners
from runners.testing import BackendSuite

ROOT = Path(__file__).resolve().parents[1]
# A distribution of its own: its test runs only where it is installed (tests/test_example_plugin.py).
collect_ignore = ["example_plugin"]
# Helpers that multiprocessing keeps for the life of the interpreter (not per pool): not orphans.
INTERPRETER_HELPERS = ("resource_tracker", "forkserver")
SYSTEM_TEMP = tempfile.gettempdir()
# multiprocessing's own folder lives as long as this interpreter (the forkserver's socket is in it):
# make it now, in the system's temp, not in the first test's private one.
multiprocessing.util.get_temp_dir()


# Modules whose cases each start a cluster or a CLI subprocess with a pool: the `slow` marker, left out
# of the day-to-day loop (`pytest -m "not slow"`); `.ci/run` runs everything.
SLOW_MODULES = {"test_faults", "test_ray", "test_dask", "test_mpi", "test_mpi_jobs", "test_example_plugin",
                "test_bed_dask", "test_bed_mpi", "test_bed_ray", "test_bed_itself"}


CLUSTERS = {"ray", "dask", "mpi"}  # a case on one of these starts it: seconds each, more under load
# Modules whose cases share one started cluster (a module fixture): `pytest -n N` (pyproject's
# --dist loadgroup) keeps each on one worker, so the cluster starts once, not once per worker.
SHARED_CLUSTER_MODULES = {"test_ray", "test_dask"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        params = getattr(item, "callspec", None)
        on_a_cluster = params is not None and any(
            isinstance(value, str) and value in CLUSTERS for value in params.params.values())
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module is not None else ""
        if module in SLOW_MODULES or on_a_cluster:
            item.add_marker(pytest.mark.slow)
        if (group := _shared_start(item, module)) is not None:
            item.add_marker(pytest.mark.xdist_group(group))


def _shared_start(item: pytest.Item, module: str) -> str | None:
    """The group of cases that share a started back-end, cluster or test bed with this one, if any."""
    if "bed" in item.nodeid.split("::")[0].split("/")[:-1]:
        return "bed"  # one three-host bed per session (tests/bed/conftest.py), for all its modules
    if module in SHARED_CLUSTER_MODULES:
        return module
    if item.cls is not None and issubclass(item.cls, BackendSuite):
        return item.cls.__name__  # the kit's class fixture starts its back-end once for the class
    return None


def installed_backends() -> list[str]:
    return [name for name in runners.backend_names() if runners.backend_status(name)[0]]


def _shm() -> set[str]:
    # multiprocessing's own semaphores live until their pool is collected, at the latest until this
    # interpreter exits; once joblib is imported, loky names them all sem.loky-<this pid>-...
    own = ("sem.mp-", f"sem.loky-{os.getpid()}-")
    try:
        return {n for n in os.listdir("/dev/shm") if not n.startswith(own)}
    except FileNotFoundError:
        return set()


PID_IN_NAME = re.compile(r"-(\d+)-")  # runners-PID-token (SharedArray), sem.loky-PID-... (loky)
MPICH_SEGMENT = re.compile(r"/dev/shm/(mpich_shm_\S+)")
HYDRA_TOPOLOGY = re.compile(r"/tmp/hydra_hwloc_xmlfile_\w+")  # what hydra's proxy writes for its ranks


class Witness:
    """What this test's own processes (the descendants of this interpreter) are seen doing while it
    runs, sampled from a thread: their pids, and the MPICH segments that the MPI ranks among them map,
    by the RUNNERS_TEST_TAG of the run each rank belongs to.

    Other copies of the suite run beside this one, with MPI jobs, Ray and Dask of their own: a segment
    in /dev/shm is this test's only if one of these processes made it (its pid is in the name) or
    mapped it (MPICH's names carry no pid). A rank orphaned by a killed runner was seen before then.
    """

    PERIOD = 0.2  # an MPI rank maps its segment from MPI_Init to its end: far longer than this

    def __init__(self) -> None:
        self.pids = {os.getpid()}
        self.mapped: dict[str, set[str]] = {}  # segment -> the run tags of the ranks that mapped it
        self.topology: dict[str, set[str]] = {}  # run tag -> the topology files its hydra proxies held
        self._ranks: dict[tuple[int, float], str | None] = {}  # a rank's run tag; None: not a rank
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="leftover-witness", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()  # whatever appeared since the last round

    def segments_of(self, tag: str) -> set[str]:
        """The MPICH segments that ranks of the run tagged `tag` mapped."""
        return {name for name, tags in self.mapped.items() if tag in tags}

    def topology_files_of(self, tag: str) -> set[str]:
        """The topology files (/tmp/hydra_hwloc_xmlfile_*) that hydra's proxies of run `tag` held."""
        return self.topology.get(tag, set())

    def owns(self, segment: str) -> bool:
        if segment.startswith("mpich_shm_"):
            return segment in self.mapped
        match = PID_IN_NAME.search(segment)
        if match is not None:
            return int(match.group(1)) in self.pids
        return True  # a name that says nothing of its maker: blamed, as before

    def _watch(self) -> None:
        while not self._stop.wait(self.PERIOD):
            self.sample()

    def sample(self) -> None:
        for proc in psutil.Process().children(recursive=True):
            self.pids.add(proc.pid)
            try:
                if proc.name() == "hydra_pmi_proxy":
                    self._proxy_files(proc)
                    continue
                tag = self._rank_tag(proc)
                if tag is None:
                    continue
                with open(f"/proc/{proc.pid}/maps") as maps:
                    found = MPICH_SEGMENT.findall(maps.read())
            except (psutil.Error, OSError):
                continue
            for name in found:
                self.mapped.setdefault(name, set()).add(tag)

    def _proxy_files(self, proc: psutil.Process) -> None:
        files = {f.path for f in proc.open_files() if HYDRA_TOPOLOGY.fullmatch(f.path)}
        if files:
            self.topology.setdefault(proc.environ().get("RUNNERS_TEST_TAG", ""), set()).update(files)

    def _rank_tag(self, proc: psutil.Process) -> str | None:
        key = (proc.pid, proc.create_time())
        if key not in self._ranks:
            environ = proc.environ()
            rank = "PMI_RANK" in environ or "PMI_SIZE" in environ
            self._ranks[key] = environ.get("RUNNERS_TEST_TAG", "") if rank else None
        return self._ranks[key]


def _live_children() -> list[psutil.Process]:
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            if any(h in " ".join(child.cmdline()) for h in INTERPRETER_HELPERS):
                continue
            alive.append(child)
        except psutil.NoSuchProcess:
            continue
    return alive


@pytest.fixture(autouse=True)
def no_leftovers(tmp_path_factory, request):
    """Every test must leave no child process, no new /dev/shm segment and no temporary file behind.

    Each test gets a TMPDIR of its own (inherited by every process it starts, CLI runs included), so
    what a run leaves in it is this test's, whatever else runs on the machine at the same time; and a
    new /dev/shm segment is blamed on the test only if its own processes made it (see Witness).
    Yields the Witness, for tests that tell their own run's segments from any other's. The kit's cases
    on a back-end shared by their class (fixture `started`) leave its workers running: the fixture checks
    them when it shuts the back-end down."""
    tmp_path_factory.getbasetemp()  # pytest's own folder: fixed on first use, so before TMPDIR changes
    shm_before = _shm()
    before = {p.pid for p in _live_children()}
    witness = Witness()
    temp = tempfile.mkdtemp(prefix="rt-", dir=SYSTEM_TEMP)  # short: Ray's socket paths must fit 107 bytes
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = temp
    try:
        yield witness
    finally:
        if saved[0] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[0]
        tempfile.tempdir = saved[1]
        witness.stop()
    shared = "started" in request.fixturenames  # its back-end's leftovers: see shared_leftovers
    deadline = time.monotonic() + 10
    while True:
        new = [p for p in _live_children() if p.pid not in before and not shared]
        # a job's segments go when its last rank has gone (runners_mpi's sweeper): give it that time
        leaked = {name for name in _shm() - shm_before if witness.owns(name) and not shared}
        if not (new or leaked) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    left = sorted(os.listdir(temp))
    shutil.rmtree(temp, ignore_errors=True)
    assert not new, f"processes left behind: {[(p.pid, p.cmdline()) for p in new]}"
    assert not leaked, f"shared-memory segments left behind: {sorted(leaked)}"
    assert not left, f"temporary files left behind in TMPDIR: {left}"


@pytest.fixture(scope="class", autouse=True)
def shared_leftovers(request):
    """The kit's classes (runners.testing.BackendSuite) run most cases on one back-end started for the
    class: the /dev/shm segments its processes made must be gone once it is shut down (its processes:
    the kit's own fixture checks them). Set up before that fixture, so torn down after it."""
    if request.cls is None or not issubclass(request.cls, BackendSuite):
        yield
        return
    shm_before = _shm()
    witness = Witness()
    yield
    witness.stop()
    deadline = time.monotonic() + 10
    while (leaked := {n for n in _shm() - shm_before if witness.owns(n)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not leaked, f"the shared back-end left shared-memory segments: {sorted(leaked)}"


def tagged_processes(tag: str) -> list[psutil.Process]:
    """Processes that carry RUNNERS_TEST_TAG=tag in their environment, wherever they were reparented."""
    return processes_with("RUNNERS_TEST_TAG", tag)


def processes_with(variable: str, value: str) -> list[psutil.Process]:
    """Live processes whose environment has `variable` set to `value`, wherever they were reparented."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(variable) == value and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def run_cli(*args: str, timeout: float = 120, env: dict[str, str] | None = None,
            cwd: Path | None = None, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run `runners ARGS` as a user would, in a subprocess; then check it left no process behind.

    The result's `tag` is the run's RUNNERS_TEST_TAG (see Witness.segments_of)."""
    tag = uuid.uuid4().hex
    full_env = {**os.environ, **(env or {}), "RUNNERS_TEST_TAG": tag}
    command = [*(launcher or []), sys.executable, "-m", "runners", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=cwd or ROOT)
    deadline = time.monotonic() + 15
    while (left := tagged_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"`runners {' '.join(args)}` left processes: {[p.cmdline() for p in left]}"
    done.tag = tag  # type: ignore[attr-defined]
    return done
