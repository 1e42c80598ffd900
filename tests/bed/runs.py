"""Runs on the test bed's hosts: `runners` commands started on a host as a user would, a task whose
items show on which host they run, faults that strike a host mid-run, and readings of what a run said."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from tests.bed.hosts import Bed
from tests.conftest import ROOT

# An item that leaves a mark on the host it ran on (in that host's private folder), then takes a while:
# a test can wait until a host is busy with the run before it strikes that host.
BEAT = '''
import os
import time


def beat(x):
    os.makedirs("{ticks}", exist_ok=True)
    open(os.path.join("{ticks}", str(x)), "w").close()
    time.sleep({seconds})
    return x * x
'''


def runners_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "runners", *args]


@dataclass
class Finished:
    returncode: int | None  # None: it was still running at its time limit, and was killed
    stdout: str
    stderr: str
    seconds: float  # from the start, or from the moment the caller named (a fault)

    def measured(self, what: str) -> str:
        """What `seconds` measured: `what`, or that the command was killed at its time limit."""
        return what if self.returncode is not None else "still running at the limit, killed"


class HostRun:
    """A command started in the background on a bed host, from the project's folder, as a user at that
    host's shell would start it: with this session's environment, but Ray's variables only from `env`."""

    def __init__(self, bed: Bed, host: str, command: list[str], env: dict[str, str] | None = None) -> None:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.process = subprocess.Popen([*bed.on(host, ROOT), *command], env={**environment, **(env or {})},
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)

    def find(self, *words: str) -> psutil.Process:
        """The process of this run whose command line holds `words` (the driver: "runners", "exec")."""
        for proc in psutil.Process(self.process.pid).children(recursive=True):
            try:
                if all(word in proc.cmdline() for word in words):
                    return proc
            except psutil.Error:
                continue
        raise LookupError(f"no process of this run runs {words}")

    def finish(self, timeout: float, since: float | None = None) -> Finished:
        """Wait until the command ends, at most `timeout` seconds from `since` (default: now); past that,
        end it and everything it started, by PID, and report returncode None."""
        since = time.monotonic() if since is None else since
        try:
            out, err = self.process.communicate(timeout=max(0.1, since + timeout - time.monotonic()))
            return Finished(self.process.returncode, out, err, time.monotonic() - since)
        except subprocess.TimeoutExpired:
            seconds = time.monotonic() - since
        self.kill()
        out, err = self.process.communicate(timeout=30)
        return Finished(None, out, err, seconds)

    def kill(self) -> None:
        try:
            top = psutil.Process(self.process.pid)
            tree = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            tree = []
        for proc in tree:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(tree, timeout=10)


class Beat:
    """The `beat` task (see BEAT) in a file, and the marks its items left on each host."""

    def __init__(self, bed: Bed, file: Path, path_on_hosts: Path) -> None:
        self.bed = bed
        self.task = f"{path_on_hosts}:beat"
        self._file = file

    def wait_until_busy(self, host: str, timeout: float = 90) -> None:
        """Return once an item has started on `host`."""
        deadline = time.monotonic() + timeout
        while not any(self.ticks(host)):
            assert time.monotonic() < deadline, f"no item ran on {host} within {timeout:g} s"
            time.sleep(0.05)

    def ticks(self, host: str) -> list[int]:
        folder = self.bed.private_path(host, "ticks")
        return sorted(int(name) for name in os.listdir(folder)) if folder.is_dir() else []

    def clear(self) -> None:
        for host in self.bed.hosts:
            shutil.rmtree(self.bed.private_path(host, "ticks"), ignore_errors=True)


def make_beat(bed: Bed, where: str, seconds: float) -> Beat:
    """The beat task in a file on the driver's host h1 only (`where="h1"`), or in a folder every host
    shares (`where="shared"`), as a home folder on NFS would be."""
    source = BEAT.format(ticks=bed.private / "ticks", seconds=seconds)
    if where == "shared":
        file = path_on_hosts = bed.folder / "shared" / "beat.py"
    else:
        path_on_hosts = bed.private / "tasks" / "beat.py"
        file = bed.private_path(where, "tasks/beat.py")
    file.parent.mkdir(exist_ok=True)
    file.write_text(source)
    beat = Beat(bed, file, path_on_hosts)
    beat.clear()
    return beat


def sieve_count(start: int, stop: int) -> int:
    """Primes in [start, stop), by the sieve of Eratosthenes: the truth a primes run is held to."""
    marks = bytearray([1]) * stop
    marks[:2] = b"\0\0"
    for n in range(2, int(stop**0.5) + 1):
        if marks[n]:
            marks[n * n::n] = bytearray(len(range(n * n, stop, n)))
    return sum(marks[start:stop])


def hosts_of(bed: Bed, nodes: dict[str, int]) -> dict[str, int]:
    """The `nodes` of a --json record by bed host: its keys name a host, its address, or an address
    with a port (Ray: NODEID@IP, Dask: tcp://IP:PORT, MPI: the host name). Unknown keys stay as they are."""
    found: dict[str, int] = {}
    for key, count in nodes.items():
        words = set(key.replace("@", " ").replace("tcp://", " ").replace(":", " ").split())
        name = next((h.name for h in bed.hosts.values() if {h.name, h.ip} & words), key)
        found[name] = found.get(name, 0) + count
    return found


def idle_within(bed: Bed, seconds: float) -> dict[str, list[str]]:
    """Wait until no host runs anything, at most `seconds`; return what still runs then."""
    deadline = time.monotonic() + seconds
    while (busy := bed.busy()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return busy


def end_everything(bed: Bed) -> None:
    """Stop every process on every host (a test that measured a hang, before the next one starts)."""
    for host in bed.hosts:
        bed.stop(host, grace=1)


def strike(bed: Bed, beat: Beat, host: str, fault: str) -> float:
    """Once an item runs on `host`, kill every process there ("kill") or cut its cable ("cut");
    return the moment it happened."""
    beat.wait_until_busy(host)
    moment = time.monotonic()
    {"kill": bed.crash, "cut": bed.cut}[fault](host)
    return moment


def error_line(stderr: str) -> str:
    """The CLI's one-line error (the last line starting "Error:"), or ""."""
    return next((line for line in reversed(stderr.splitlines()) if line.startswith("Error:")), "")
