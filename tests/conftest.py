"""Shared fixtures: the live back-end registry, CLI runs in subprocesses, and the orphan checks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

import runners

ROOT = Path(__file__).resolve().parents[1]
# Helpers that multiprocessing keeps for the life of the interpreter (not per pool): not orphans.
INTERPRETER_HELPERS = ("resource_tracker", "forkserver")


def installed_backends() -> list[str]:
    return [name for name in runners.backend_names() if runners.backend_status(name)[0]]


def _shm() -> set[str]:
    try:
        return {n for n in os.listdir("/dev/shm") if not n.startswith("sem.mp-")}
    except FileNotFoundError:
        return set()


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
def no_leftovers():
    """Every test must leave no child process and no new /dev/shm segment behind."""
    shm_before = _shm()
    before = {p.pid for p in _live_children()}
    yield
    deadline = time.monotonic() + 10
    while True:
        new = [p for p in _live_children() if p.pid not in before]
        if not new or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not new, f"processes left behind: {[(p.pid, p.cmdline()) for p in new]}"
    leaked = _shm() - shm_before
    assert not leaked, f"shared-memory segments left behind: {sorted(leaked)}"


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
