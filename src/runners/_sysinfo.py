"""The machine and software a batch ran on: the header of every report."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
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
