"""One large numpy array for every worker, by each approach's own mechanism: seconds and memory.

The document's comparison table (section 11) says how each approach shares data: threads and asyncio
directly, multiprocessing through special mechanisms, joblib by automatic serialisation, Ray through
distributed objects, mpi4py by MPI communication. One item is one mechanism: the driver holds an array
of `megabytes` (0, 1, 2, ...), starts `workers` workers the approach's own way, hands every worker the
whole array by that mechanism, and each sends back one number, the sum of every `workers`-th element
from its offset (which touches every page). Per mechanism:
- startup_s: workers ready (not part of `seconds`);  seconds: from the hand-over to the last sum back;
- workers_mb: what the ready workers added to the process tree's memory;
- added_mb: what the hand-over added at its peak; copies = added_mb / the array's size (0: shared).
Memory is the whole tree's (`runners.tree_mb`: PSS, each shared page counted once). Run it on the serial
back-end: each item starts and stops its own workers, and measurements must not overlap. Each library
is imported only when its row runs; one that is not installed gives a row that says so.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import psutil

from runners import (
    Task,
    Verdict,
    param,
    scratch_folder,
)

from ._handover import RUNNERS, Meter, Together, mpi_bcast, mpiexec

Mechanism = Literal["threads", "asyncio", "shared_memory", "pickle", "joblib_memmap", "ray_put",
                    "mpi_bcast", "dask_scatter"]
# mechanism -> (the document's approach, how the array reaches the workers, what must be installed)
MECHANISMS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "threads": ("threading", "shared directly: threads read the driver's array", ()),
    "asyncio": ("asyncio", "shared directly: coroutines of one thread read the driver's array", ()),
    "shared_memory": ("multiprocessing", "copied once into multiprocessing.shared_memory (runners."
                      "SharedArray); workers map it", ()),
    "pickle": ("multiprocessing", "a plain argument of Pool.starmap: pickled to every worker", ()),
    "joblib_memmap": ("joblib", "a plain argument of joblib.Parallel: memory-mapped automatically",
                      ("joblib",)),
    "ray_put": ("ray", "ray.put once; each task gets the ObjectRef", ("ray",)),
    "mpi_bcast": ("mpi4py", "comm.Bcast of the buffer from rank 0 to every rank", ("mpi4py",)),
    "dask_scatter": ("dask", "client.scatter(broadcast=True); each task gets the future",
                     ("distributed",)),
}
LINGER = 10.0  # seconds a mechanism's processes get to end after it closed them
INTERPRETER_HELPERS = ("resource_tracker", "forkserver")  # one per interpreter, not per pool


@dataclass(frozen=True)
class SharingParams:
    megabytes: float = param(200, min=1, max=65536, help="size of the float64 array every worker gets")
    workers: int = param(2, min=1, max=64, help="workers (threads, processes, ranks) that each get it")
    mechanisms: list[Mechanism] = param(list(MECHANISMS), help="mechanisms to measure, in this order")
    hold: float = param(0.25, min=0, max=60, help="seconds the workers keep the array once all have it, "
                        "so that the memory sampler sees every copy; taken off `seconds`")


def length(params: SharingParams) -> int:
    return int(params.megabytes * 2**20) // 8


def split(params: SharingParams, seed: int) -> list[tuple[str, int, int, float]]:
    return [(mechanism, length(params), params.workers, params.hold) for mechanism in params.mechanisms]


def expected_sums(n: int, step: int) -> list[float]:
    """The closed form of strided_sum over 0, 1, ..., n-1 (exact in float64 below 2**53)."""
    sums = []
    for offset in range(step):
        terms = max(0, -(-(n - offset) // step))
        sums.append(float(terms * offset + step * terms * (terms - 1) // 2))
    return sums


def measure(item: tuple[str, int, int, float]) -> dict[str, Any]:
    """One mechanism: start its workers, hand them the array, check the sums, stop them."""
    mechanism, n, workers, hold = item
    approach, how, needs = MECHANISMS[mechanism]
    array_mb = n * 8 / 2**20
    row: dict[str, Any] = {"mechanism": mechanism, "approach": approach, "workers": workers,
                           "array_mb": round(array_mb, 1)}
    missing = [name for name in needs if importlib.util.find_spec(name) is None]
    if mechanism == "mpi_bcast" and not missing and mpiexec() is None:
        missing.append("mpiexec")
    if missing:
        return {**row, "ok": None, "note": f"not installed: {', '.join(missing)} (pip install "
                                           f"'runners[{_extra(approach)}]')"}
    before = {p.pid for p in _children()}
    meter = Meter(array_mb)
    folder = scratch_folder("sharing")
    try:
        if mechanism == "mpi_bcast":  # rank 0 makes the array, as an MPI program does; Bcast is collective
            sums = mpi_bcast(n, workers, hold, meter)
        else:
            array = np.arange(n, dtype=np.float64)
            sums = RUNNERS[mechanism](array, workers, Together(folder, workers, hold), meter)
            meter.seconds = max(0.0, meter.seconds - hold)  # the workers held the array together
            del array
        ok = sums == expected_sums(n, workers)
        note = "" if ok else f"sums {sums} differ from the closed form {expected_sums(n, workers)}"
    except Exception as exc:  # noqa: BLE001 - one mechanism failing must not hide the others' rows
        ok, note = False, f"failed: {type(exc).__name__}: {(str(exc).strip() or '?').splitlines()[0][:200]}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    left = _reap(before)
    if left:
        ok, note = False, f"{note}; stopped {left} of its processes left running".lstrip("; ")
    measured = ok is not False and meter.peak_mb > 0
    added = max(0.0, meter.peak_mb - meter.ready_mb) if measured else None
    return {**row, "startup_s": round(meter.startup, 4) if measured else None,
            "seconds": round(meter.seconds, 4) if measured else None,
            "workers_mb": round(max(0.0, meter.ready_mb - meter.base_mb - array_mb), 1) if measured else None,
            "added_mb": None if added is None else round(added, 1),
            "copies": None if added is None else round(added / array_mb, 2), "ok": ok, "note": note}


def _children() -> list[Any]:
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


def _reap(before: set[int]) -> int:
    """Wait for the processes a mechanism started to end; stop those still there after LINGER.
    multiprocessing's (and loky's) resource tracker serves the interpreter, not the mechanism: kept."""
    deadline = time.monotonic() + LINGER
    while True:
        left = [p for p in _children() if p.pid not in before and _running(p) and not _helper(p)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(left, timeout=5)
    return len(left)


def _helper(process: Any) -> bool:
    try:
        return any(name in " ".join(process.cmdline()) for name in INTERPRETER_HELPERS)
    except psutil.Error:
        return False


def _running(process: Any) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _extra(approach: str) -> str:
    return {"mpi4py": "mpi", "dask": "dask", "ray": "ray", "joblib": "joblib"}.get(approach, "all")


def combine(rows: Iterator[dict[str, Any]], params: SharingParams) -> list[dict[str, Any]]:
    return list(rows)


def check(rows: list[dict[str, Any]], params: SharingParams) -> Verdict:
    """Every mechanism that ran must have brought back the closed-form sums and left nothing behind."""
    planned = list(params.mechanisms)
    if [r["mechanism"] for r in rows] != planned:
        return Verdict(False, f"rows {[r['mechanism'] for r in rows]} do not match the plan {planned}")
    failed = [f"{r['mechanism']}: {r['note']}" for r in rows if r["ok"] is False]
    if failed:
        return Verdict(False, "; ".join(failed))
    skipped = [r["mechanism"] for r in rows if r["ok"] is None]
    ran = len(rows) - len(skipped)
    return Verdict(True, f"{ran} mechanisms gave every worker the array and the exact sums back"
                   + (f"; not installed: {', '.join(skipped)}" if skipped else ""))


TASK = Task("sharing", SharingParams, split, measure, combine, check,
            description="every worker gets one large array by each approach's own mechanism: time, memory")
