"""A test bed of separate hosts on one machine, for clusters that must cross a network.

Each host is a network namespace with an address on a private /24, joined by a veth pair to a bridge
that lives in a fourth, "switch" namespace: the machine's own namespace has no route to the bed at
all, and the bed has no default route and no NAT, so nothing the tests start can reach a real network.
Each host also has its own hostname, /dev/shm, IPC and PID namespace, else MPICH and UCX take the
hosts for one machine and talk through shared memory instead of TCP. Process 1 of each host is
`host_init.py`, detached from the test session (what runs on a host is not the test's child, as on a
real machine) and tied to it by a lifeline pipe: if the session dies, the hosts die with it.

Names carry the session's pid and a random token, so two test sessions can run side by side, and a
later session removes what a killed one left. Every step has a timeout; processes are ended by PID.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SUBNET = "10.77.15"  # the bed's /24: its addresses exist only inside the bed's namespaces
STEP_SECONDS = 10  # any one `ip`, `mount` or start-up step
STOP_SECONDS = 5  # SIGTERM to SIGKILL when a host's processes are ended
INIT = Path(__file__).with_name("host_init.py")
RSH = Path(__file__).with_name("rsh.py")
STALE = re.compile(r"rbed-(\d+)-[0-9a-f]+(-\w+)?$")  # rbed-PID-TOKEN[-HOST]: namespaces and folders


class BedUnavailable(Exception):
    """This machine cannot build the bed (not root, a tool missing, namespaces refused)."""


@dataclass(frozen=True)
class Host:
    name: str
    ip: str
    netns: str
    port: str  # its veth end on the switch: down is a cut cable
    init: int  # pid of its process 1, as this (the machine's) PID namespace sees it


def _run(*command: str, timeout: float = STEP_SECONDS) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BedUnavailable(f"`{' '.join(command)}` took over {timeout:g} s") from None
    if done.returncode != 0:
        raise BedUnavailable(f"`{' '.join(command)}` failed: {done.stderr.strip()}")
    return done.stdout


def check_machine() -> None:
    """Raise BedUnavailable, saying why, where this machine cannot build the bed."""
    if os.geteuid() != 0:
        raise BedUnavailable("the three-host test bed needs root (network namespaces, mounts)")
    missing = [tool for tool in ("ip", "unshare", "nsenter", "setsid", "mount") if not shutil.which(tool)]
    if missing:
        raise BedUnavailable(f"the three-host test bed needs {', '.join(missing)} (iproute2, util-linux)")


def _netns_pids(netns: str) -> list[int]:
    try:
        return [int(p) for p in _run("ip", "netns", "pids", netns).split()]
    except BedUnavailable:
        return []  # already gone


def _delete_netns(name: str) -> None:
    """Delete a namespace; one that is already gone is no error: another suite's bed, sweeping the
    same stale beds at the same moment, may have deleted it first."""
    try:
        _run("ip", "netns", "delete", name)
    except BedUnavailable:
        if name in _netns_names():
            raise


def _netns_names() -> list[str]:
    return [line.split()[0] for line in _run("ip", "netns", "list").splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def end_processes(pids: Iterable[int], grace: float | None = STOP_SECONDS) -> list[int]:
    """SIGTERM `pids`, SIGKILL those left after `grace` seconds; return any still alive after that.
    With `grace=None` there is no SIGTERM: the processes die at once, as in a power cut."""
    pids = set(pids)
    steps = [(signal.SIGKILL, STOP_SECONDS)]
    if grace is not None:
        steps.insert(0, (signal.SIGTERM, grace))
    for sig, wait in steps:
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while (pids := {p for p in pids if _alive(p)}) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not pids:
            break
    return sorted(pids)


def end_host_processes(pids: list[int], grace: float | None) -> list[int]:
    """`end_processes`, then remove the hydra topology files (/tmp/hydra_hwloc_xmlfile_*) that those
    processes held open or were to remove (an MPI sweeper's arguments). Hydra removes its file at a
    normal exit; the bed's hosts share this machine's /tmp, so what a host the bed kills leaves there is
    the bed's to remove (a real dead host keeps its own)."""
    try:
        from runners_mpi._sweeper import TOPOLOGY_FILE, topology_files
    except ImportError:  # no mpi back-end: no hydra either
        return end_processes(pids, grace)
    left = set()
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
        except OSError:
            continue
        left.update(word for argument in command for word in argument.split(",")
                    if TOPOLOGY_FILE.fullmatch(word))
        left.update(topology_files(pid))
    survivors = end_processes(pids, grace)
    for path in left:
        Path(path).unlink(missing_ok=True)
    return survivors


def sweep_stale() -> None:
    """Remove the namespaces and folders of beds whose test session is no longer running."""
    for name in _netns_names():
        match = STALE.match(name)
        if match and not _alive(int(match.group(1))):
            end_processes(_netns_pids(name), grace=0)
            _delete_netns(name)
    for folder in Path(tempfile.gettempdir()).glob("rbed-*"):
        match = STALE.match(folder.name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(folder, ignore_errors=True)


def bed_leftovers(prefix: str) -> list[str]:
    """What a closed bed left on this machine: namespaces, its folder, processes that name its folder."""
    import psutil

    folder = Path(tempfile.gettempdir()) / prefix
    left = [f"namespace {name}" for name in _netns_names() if name.startswith(prefix)]
    left += [f"folder {folder}"] if folder.exists() else []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if any(str(folder) in arg for arg in proc.info["cmdline"] or ()) and _alive(proc.info["pid"]):
            left.append(f"process {proc.info['pid']} {' '.join(proc.info['cmdline'])}")
    return left


class Bed:
    """Hosts h1..hN on one switch. Use as a context manager: everything is removed on exit."""

    def __init__(self, names: Iterable[str] = ("h1", "h2", "h3")) -> None:
        check_machine()
        sweep_stale()
        token = secrets.token_hex(3)
        self.prefix = f"rbed-{os.getpid()}-{token}"
        self.switch = f"{self.prefix}-sw"
        self.bridge = f"br{token}"
        self.folder = Path(tempfile.gettempdir()) / self.prefix
        self.private = self.folder / "private"  # each host mounts its own, empty, over this one
        self.hosts: dict[str, Host] = {}
        self._lifeline: int | None = None
        self._names = list(names)
        self._token = token
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        self.private.mkdir(parents=True)
        ips = {name: f"{SUBNET}.{i}" for i, name in enumerate(self._names, start=1)}
        hosts_file = self.folder / "hosts"
        hosts_file.write_text("127.0.0.1 localhost\n" + "".join(f"{ip} {n}\n" for n, ip in ips.items()))
        _run("ip", "netns", "add", self.switch)
        self._in_switch("link", "add", self.bridge, "type", "bridge")
        self._in_switch("link", "set", self.bridge, "up")
        netns = {name: f"{self.prefix}-{name}" for name in self._names}
        for name in self._names:
            port, nic = f"v{self._token}{name}", f"e{self._token}{name}"
            _run("ip", "netns", "add", netns[name])
            self._in_switch("link", "add", port, "type", "veth", "peer", "name", nic, "netns", netns[name])
            self._in_switch("link", "set", port, "master", self.bridge, "up")
            _run("ip", "-n", netns[name], "addr", "add", f"{ips[name]}/24", "dev", nic)
            _run("ip", "-n", netns[name], "link", "set", nic, "up")
            _run("ip", "-n", netns[name], "link", "set", "lo", "up")
        readable, self._lifeline = os.pipe()
        try:
            for name in self._names:
                self._start_init(name, netns[name], hosts_file, readable)
            for name in self._names:
                self.hosts[name] = Host(name, ips[name], netns[name], f"v{self._token}{name}",
                                        self._wait_for_init(name, netns[name]))
        finally:
            os.close(readable)
        self.rsh = self._write_rsh()
        self.hostfile = self.folder / "hostfile"
        self.hostfile.write_text("".join(f"{name}:1\n" for name in self._names))

    def _in_switch(self, *args: str) -> str:
        return _run("ip", "-n", self.switch, *args)

    def _start_init(self, name: str, netns: str, hosts_file: Path, lifeline: int) -> None:
        # setsid -f: the host is not this session's child (its processes are no test's leftovers)
        command = ["setsid", "-f", "ip", "netns", "exec", netns, "unshare", "--uts", "--ipc", "--pid",
                   "--fork", "--mount", "--propagation", "private", sys.executable, str(INIT), name,
                   str(hosts_file), str(self.private), str(self.folder / f"{name}.sock"), str(lifeline)]
        with open(self.folder / f"{name}.log", "w") as log:
            subprocess.run(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(lifeline,),
                           timeout=STEP_SECONDS, check=True)

    def _wait_for_init(self, name: str, netns: str) -> int:
        deadline = time.monotonic() + STEP_SECONDS
        while time.monotonic() < deadline:
            for pid in _netns_pids(netns):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                    if re.search(r"^NSpid:.*\s1$", status, re.M) and \
                            Path(f"/proc/{pid}/root{self.private}/.ready").exists():
                        return pid
                except OSError:
                    continue
            time.sleep(0.05)
        log = (self.folder / f"{name}.log").read_text().strip()
        raise BedUnavailable(f"host {name} did not start within {STEP_SECONDS} s: {log or 'no output'}")

    def _write_rsh(self) -> Path:
        """hydra's remote launcher on the bed (`-launcher rsh -launcher-exec PATH`); see `rsh.py`."""
        script = self.folder / "rsh"
        script.write_text(f'#!/bin/sh\nexec {sys.executable} {RSH} {self.folder} "$@"\n')
        script.chmod(0o755)
        return script

    def on(self, name: str, cwd: Path | str = "/") -> list[str]:
        """The command prefix that runs a command on host `name`, from folder `cwd`, with the
        caller's environment (a login on that host would not keep it: see `rsh`)."""
        init = str(self.hosts[name].init)
        return ["nsenter", "-t", init, "-n", "-u", "-i", "-m", "-p", f"--wd={cwd}", "--"]

    def start(self, name: str, command: list[str], env: dict[str, str], log: str) -> None:
        """Start a daemon on host `name` (it outlives the command that started it, as with ssh),
        its output to `log` in the host's private folder."""
        detached = ["setsid", "-f", "sh", "-c", f'exec "$@" >{self.private}/{log} 2>&1', "sh", *command]
        subprocess.run([*self.on(name), *detached], env=env, stdin=subprocess.DEVNULL, check=True,
                       timeout=STEP_SECONDS, capture_output=True)

    def private_path(self, name: str, relative: str) -> Path:
        """Where this machine reaches `relative` in the private folder of host `name`."""
        return Path(f"/proc/{self.hosts[name].init}/root{self.private}") / relative

    def processes(self, name: str) -> list[int]:
        """Every process running on host `name`, but its process 1."""
        init = self.hosts[name].init
        try:
            namespace = os.readlink(f"/proc/{init}/ns/pid")
        except FileNotFoundError:
            return []
        found = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != init:
                try:
                    if os.readlink(f"/proc/{entry}/ns/pid") == namespace and _alive(int(entry)):
                        found.append(int(entry))
                except OSError:  # gone, or not ours to look at (the machine's own process 1)
                    continue
        return found

    def busy(self) -> dict[str, list[str]]:
        """The command lines running on each host that runs anything."""
        found: dict[str, list[str]] = {}
        for name in self.hosts:
            for pid in self.processes(name):
                try:
                    command = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
                except OSError:
                    continue
                found.setdefault(name, []).append(command)
        return found

    def stop(self, name: str, grace: float = STOP_SECONDS) -> list[int]:
        """End every process on host `name` by PID; return those that would not die."""
        return end_host_processes(self.processes(name), grace)

    def crash(self, name: str) -> None:
        """The host's processes all die at once (SIGKILL): its sockets close, its peers are told.
        No SIGTERM first: Ray's workers turn one into SystemExit inside the running item, a clean
        exit that is not a lost node."""
        end_host_processes(self.processes(name), grace=None)

    def cut(self, name: str) -> None:
        """Pull the host's cable: its packets are dropped, its peers are told nothing."""
        self._in_switch("link", "set", self.hosts[name].port, "down")

    def mend(self, name: str) -> None:
        self._in_switch("link", "set", self.hosts[name].port, "up")

    def close(self) -> None:
        """End every process on the bed by PID and delete its namespaces, bridge and folder."""
        everything = [pid for name in self.hosts for pid in self.processes(name)]
        survivors = end_host_processes(everything, grace=1)  # all hosts at once: the bed is disposable
        # Then each host's process 1, and with it (by the kernel) anything started meanwhile.
        survivors += end_processes([host.init for host in self.hosts.values()], grace=0)
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None
        for netns in [f"{self.prefix}-{name}" for name in self._names] + [self.switch]:
            survivors += end_processes(_netns_pids(netns), grace=0)
            if netns in _netns_names():
                _delete_netns(netns)
        shutil.rmtree(self.folder, ignore_errors=True)
        if survivors:
            raise RuntimeError(f"the test bed could not end processes {survivors}")

    def __enter__(self) -> Bed:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
