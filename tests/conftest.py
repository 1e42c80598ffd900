"""Shared fixtures: the live back-end registry, CLI runs in subprocesses, and the orphan checks."""

from __future__ import annotations

import multiprocessing.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest

import runners

ROOT = Path(__file__).resolve().parents[1]
# Helpers that multiprocessing keeps for the life of the interpreter (not per pool): not orphans.
INTERPRETER_HELPERS = ("resource_tracker", "forkserver")
SYSTEM_TEMP = tempfile.gettempdir()
# multiprocessing's own folder lives as long as this interpreter (the forkserver's socket is in it):
# make it now, in the system's temp, not in the first test's private one.
multiprocessing.util.get_temp_dir()


def installed_backends() -> list[str]:
    return [name for name in runners.backend_names() if runners.backend_status(name)[0]]


def _shm() -> set[str]:
    try:
        return {n for n in os.listdir("/dev/shm") if not n.startswith("sem.mp-")}
    except FileNotFoundError:
        return set()


def _someone_elses(segment: str) -> bool:
    """True for a segment whose name carries the pid of a live process outside this test session
    (loky's sem.loky-PID-..., runners-PID-...): another suite on this machine made it."""
    match = re.search(r"-(\d+)-", segment)
    if match is None:
        return False
    try:
        owner = psutil.Process(int(match.group(1)))
        return owner.pid != os.getpid() and os.getpid() not in {p.pid for p in owner.parents()}
    except psutil.NoSuchProcess:
        return False  # its maker is gone: it may well have been ours


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
def no_leftovers(tmp_path_factory):
    """Every test must leave no child process, no new /dev/shm segment and no temporary file behind.

    Each test gets a TMPDIR of its own (inherited by every process it starts, CLI runs included), so
    what a run leaves in it is this test's, whatever else runs on the machine at the same time."""
    tmp_path_factory.getbasetemp()  # pytest's own folder: fixed on first use, so before TMPDIR changes
    shm_before = _shm()
    before = {p.pid for p in _live_children()}
    temp = tempfile.mkdtemp(prefix="rt-", dir=SYSTEM_TEMP)  # short: Ray's socket paths must fit 107 bytes
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = temp
    try:
        yield
    finally:
        if saved[0] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[0]
        tempfile.tempdir = saved[1]
    deadline = time.monotonic() + 10
    while True:
        new = [p for p in _live_children() if p.pid not in before]
        if not new or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    left = sorted(os.listdir(temp))
    shutil.rmtree(temp, ignore_errors=True)
    assert not new, f"processes left behind: {[(p.pid, p.cmdline()) for p in new]}"
    leaked = {name for name in _shm() - shm_before if not _someone_elses(name)}
    assert not leaked, f"shared-memory segments left behind: {sorted(leaked)}"
    assert not left, f"temporary files left behind in TMPDIR: {left}"


def tagged_processes(tag: str) -> list[psutil.Process]:
    """Processes that carry RUNNERS_TEST_TAG=tag in their environment, wherever they were reparented."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("RUNNERS_TEST_TAG") == tag and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def run_cli(*args: str, timeout: float = 120, env: dict[str, str] | None = None,
            cwd: Path | None = None, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run `runners ARGS` as a user would, in a subprocess; then check it left no process behind."""
    tag = uuid.uuid4().hex
    full_env = {**os.environ, **(env or {}), "RUNNERS_TEST_TAG": tag}
    command = [*(launcher or []), sys.executable, "-m", "runners", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=cwd or ROOT)
    deadline = time.monotonic() + 15
    while (left := tagged_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"`runners {' '.join(args)}` left processes: {[p.cmdline() for p in left]}"
    return done
