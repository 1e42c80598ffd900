"""The machine a batch ran on: the header of every report, and its state while the batch ran.

The state is the 2-process headroom: how much faster two processes spinning side by side get through
work than one alone, right now (2.0 on an idle 2-core machine; less while something else runs).
Measured beside every round of runs, it tells a ratio taken on a quiet machine from one taken on a
busy one. Two spare processes are started once per batch for it, before any back-end, so a
measurement costs its spinning time only (0.3 s).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import multiprocessing
import os
import platform
import signal
import sys
import time
from typing import Any

from ._backend import usable_cpus

LIBRARIES = ["runners", "numpy", "joblib", "ray", "dask", "distributed", "mpi4py", "mpich", "rich",
             "matplotlib"]


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gil_enabled() -> bool:
    check = getattr(sys, "_is_gil_enabled", None)  # 3.13+; every older build has the GIL
    return True if check is None else bool(check())


def system_info() -> dict[str, Any]:
    """A JSON-ready description: CPU, usable cores, OS, Python build and GIL, library versions."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": cpu_model(),
        "cores_usable": usable_cpus(),
        "cores_total": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "build": " ".join(platform.python_build()),
        "gil": gil_enabled(),
        "libraries": versions,
    }


def describe_system(info: dict[str, Any]) -> list[str]:
    """Lines for a report header."""
    libs = ", ".join(f"{k} {v}" for k, v in info.get("libraries", {}).items() if v) or "unknown"
    gil = "enabled" if info.get("gil", True) else "disabled (free-threaded)"
    return [
        f"CPU: {info.get('cpu', '?')}, {info.get('cores_usable', '?')} usable core(s) "
        f"of {info.get('cores_total', '?')}; {info.get('os', '?')}",
        f"Python {info.get('python', '?')} ({info.get('implementation', '?')}, {info.get('build', '?')}), "
        f"GIL {gil}",
        f"Libraries: {libs}",
    ]


def _spin(seconds: float) -> int:
    end, count = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        count += 1
    return count


def _spinner(conn: Any) -> None:
    """A spare process: spin for the seconds asked, answer the count; end when the batch does."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the batch's to handle; it ends this one
    with contextlib.suppress(EOFError, OSError, KeyboardInterrupt):
        while (seconds := conn.recv()) is not None:
            conn.send(_spin(seconds))


class Headroom:
    """Measures the 2-process headroom on demand with two spare processes (a context manager)."""

    def __init__(self, seconds: float = 0.1) -> None:
        self.seconds = seconds  # per spin: one alone, then two together
        self._ends: list[Any] = []
        self._processes: list[Any] = []

    def __enter__(self) -> Headroom:
        ctx = multiprocessing.get_context("spawn")  # no fork of a driver that may hold threads
        for _ in range(2):
            mine, theirs = ctx.Pipe()
            process = ctx.Process(target=_spinner, args=(theirs,), name="runners-headroom", daemon=True)
            process.start()
            theirs.close()
            self._ends.append(mine)
            self._processes.append(process)
        return self

    def measure(self) -> float:
        """Two spinning together over one alone. One alone is spun before and after and the better
        count kept: a neighbour that slowed the single spin would otherwise inflate the headroom."""
        first, second = self._ends
        first.send(self.seconds)
        alone = first.recv()
        first.send(self.seconds)
        second.send(self.seconds)
        together = first.recv() + second.recv()
        first.send(self.seconds)
        alone = max(alone, first.recv())
        return together / max(alone, 1)

    def __exit__(self, *exc: object) -> None:
        for end in self._ends:
            with contextlib.suppress(OSError):
                end.send(None)
                end.close()
        for process in self._processes:
            process.join(2)
            if process.is_alive():
                process.kill()
                process.join()
        self._ends, self._processes = [], []
