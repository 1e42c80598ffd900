"""The test bed itself: its hosts are separate machines on one private network with nothing beyond it,
a cut cable stops their traffic, its rsh runs commands on the host named, and it leaves nothing behind,
also when the session that made it is SIGKILLed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.bed.hosts import Bed, BedUnavailable, bed_leftovers, check_machine, sweep_stale
from tests.bed.runs import HostRun
from tests.conftest import ROOT

# Listen on the bed address of the host this runs on, accept one connection, say which host it is.
SERVE = """
import socket, sys
server = socket.create_server((sys.argv[1], 7000))
print("listening", flush=True)
conn, _ = server.accept()
conn.sendall(socket.gethostname().encode())
"""
# Connect to ADDRESS:7000 within TIMEOUT seconds and print what the other side says, or the error.
CALL = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], 7000), timeout=float(sys.argv[2])) as conn:
        print(conn.recv(100).decode())
except OSError as exc:
    print(type(exc).__name__, exc)
"""


def on(bed: Bed, host: str, *command: str, timeout: float = 30) -> str:
    done = subprocess.run([*bed.on(host), *command], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def call(bed: Bed, client: str, server: str, timeout: float) -> str:
    """What `client` gets when it connects to a listener on `server`'s bed address."""
    listener = HostRun(bed, server, [sys.executable, "-c", SERVE, bed.hosts[server].ip])
    try:
        assert listener.process.stdout.readline().strip() == "listening"
        return on(bed, client, sys.executable, "-c", CALL, bed.hosts[server].ip, str(timeout))
    finally:
        listener.kill()
        listener.process.communicate(timeout=10)


def test_each_host_has_its_own_name_shared_memory_and_processes(bed):
    names = {host: on(bed, host, "hostname") for host in bed.hosts}
    assert names == {host: host for host in bed.hosts}
    on(bed, "h1", "touch", "/dev/shm/bed-probe")
    try:
        assert "bed-probe" in on(bed, "h1", "ls", "/dev/shm").split()
        assert "bed-probe" not in on(bed, "h2", "ls", "/dev/shm").split()  # MPICH cannot take h2 for h1
    finally:
        on(bed, "h1", "rm", "/dev/shm/bed-probe")
    # -ww: whole command lines; ps cuts them at the terminal width otherwise (CI's paths are long)
    listing = on(bed, "h3", "ps", "-ww", "-e", "-o", "pid=,stat=,args=").splitlines()
    processes = [line.split(None, 2) for line in listing if line.split()[1][0] != "Z"]  # Z: not reaped yet
    assert len(processes) == 2, processes  # its process 1 and this ps: none of the machine's
    assert processes[0][0] == "1" and "host_init.py" in processes[0][2], processes


def test_hosts_reach_each_other_by_name_and_nothing_beyond_the_bed(bed):
    assert call(bed, "h3", "h1", timeout=5) == "h1"
    assert on(bed, "h2", "getent", "hosts", "h3").split() == [bed.hosts["h3"].ip, "h3"]
    routes = on(bed, "h2", "ip", "route", "show").splitlines()
    assert len(routes) == 1 and routes[0].startswith(f"{bed.hosts['h2'].ip.rsplit('.', 1)[0]}.0/24"), routes
    outside = on(bed, "h2", sys.executable, "-c", CALL.replace("7000", "53"), "192.0.2.1", "2")
    assert outside.startswith("OSError") and "unreachable" in outside, outside


def test_a_cut_cable_silences_a_host_until_it_is_mended(bed):
    bed.cut("h2")
    try:
        began = time.monotonic()
        assert call(bed, "h1", "h2", timeout=2).startswith("TimeoutError")  # no answer, not a refusal
        assert time.monotonic() - began >= 2
    finally:
        bed.mend("h2")
    assert call(bed, "h1", "h2", timeout=5) == "h2"


def test_rsh_runs_the_command_on_the_host_named_and_returns_its_status(bed):
    rsh = [str(bed.rsh)]
    assert on(bed, "h1", *rsh, "h2", "hostname") == "h2"
    assert on(bed, "h1", *rsh, bed.hosts["h3"].ip, "hostname") == "h3"
    failed = subprocess.run([*bed.on("h1"), *rsh, "h3", "exit 7"], timeout=30)
    assert failed.returncode == 7
    unknown = subprocess.run([*bed.on("h1"), *rsh, "h9", "true"], capture_output=True, text=True, timeout=30)
    assert unknown.returncode == 255 and "h9" in unknown.stderr


def test_a_closed_bed_leaves_no_namespace_process_or_folder():
    other = Bed(("a1", "a2"))
    other.start("a2", ["sleep", "600"], {}, "sleep.log")
    assert other.processes("a2")
    other.close()
    assert bed_leftovers(other.prefix) == []


def test_the_hosts_of_a_sigkilled_session_end_with_it_and_its_namespaces_are_swept():
    make = ("import sys, time; sys.path.insert(0, sys.argv[1]); from tests.bed.hosts import Bed; "
            "bed = Bed(('k1', 'k2')); bed.start('k2', ['sleep', '600'], {}, 'sleep.log'); "
            "print(bed.prefix, flush=True); time.sleep(600)")
    session = subprocess.Popen([sys.executable, "-c", make, str(ROOT)], stdout=subprocess.PIPE, text=True)
    try:
        prefix = session.stdout.readline().strip()
        assert prefix.startswith("rbed-"), prefix
    finally:
        session.send_signal(signal.SIGKILL)
        session.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(item.startswith("process") for item in bed_leftovers(prefix)):
        if time.monotonic() > deadline:
            pytest.fail(f"the hosts outlived their session: {bed_leftovers(prefix)}")
        time.sleep(0.1)
    assert bed_leftovers(prefix)  # its namespaces and folder wait for a sweep...
    sweep_stale()
    assert bed_leftovers(prefix) == []  # ... which any later bed does first


@pytest.mark.parametrize(("missing", "needle"), [("root", "needs root"), ("nsenter", "needs nsenter")])
def test_a_machine_without_root_or_a_tool_is_told_why_there_is_no_bed(monkeypatch, missing, needle):
    check_machine()  # this machine can: the bed's tests ran
    if missing == "root":
        monkeypatch.setattr(os, "geteuid", lambda: 1000)
    else:
        which = shutil.which
        monkeypatch.setattr(shutil, "which", lambda tool: None if tool == missing else which(tool))
    with pytest.raises(BedUnavailable, match=needle):
        check_machine()
