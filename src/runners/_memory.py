"""Memory of a process tree: this process and every process it started, counted once.

A page that several processes map (shared memory, a memory-mapped file, an object store, pages a fork
shares) is counted in each one's RSS, so a sum of RSS counts a shared array once per worker: exactly
what tells sharing from copying would be hidden. PSS (proportional set size) divides each page among
the processes that map it, so the tree's PSS counts it once. Linux gives it cheaply in
/proc/PID/smaps_rollup; elsewhere RSS stands in, and `KIND` says which.

Reading it walks each process's page tables: ~2 ms for a Ray worker here, ~20 ms for a Ray tree, and
far more while a process maps hundreds of MB. So `PeakMemory` samples in a thread at an interval that
grows with that cost (the sampler stays near a tenth of one core, and samples at least every
MAX_INTERVAL), takes a last sample when its block ends, and takes one whenever its owner knows the
moment that matters (`take()`): a sample may miss a peak shorter than its interval.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Collection

import psutil

MB = 2**20
KIND = "PSS" if sys.platform.startswith("linux") else "RSS"
MIN_INTERVAL = 0.02  # seconds between samples, at the least
MAX_INTERVAL = 0.25  # ... and at the most
SAMPLER_SHARE = 0.1  # of one core, at most, spent sampling


def process_mb(pid: int) -> float:
    """One process's memory in MiB (PSS where Linux gives it, else RSS); 0 if it has gone."""
    try:
        if KIND == "PSS":
            with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
                for line in rollup:
                    if line.startswith("Pss:"):
                        return int(line.split()[1]) * 1024 / MB
            return 0.0
        return psutil.Process(pid).memory_info().rss / MB
    except (OSError, psutil.Error):  # gone between listing and reading, or not ours to read
        return 0.0


def tree_pids(root: int | None = None, exclude: Collection[int] = ()) -> list[int]:
    """`root` (default: this process) and all its descendants, wherever they are in the tree, but those
    in `exclude` (helpers that were there before, whose own growth is not what is measured)."""
    try:
        top = psutil.Process(root)
        pids = [top.pid] + [child.pid for child in top.children(recursive=True)]
    except psutil.Error:
        return []
    return [pid for pid in pids if pid not in exclude]


def tree_mb(root: int | None = None, exclude: Collection[int] = ()) -> float:
    """The memory of `root` and its descendants in MiB, each page counted once (see the module)."""
    return sum(process_mb(pid) for pid in tree_pids(root, exclude))


class PeakMemory:
    """The highest `tree_mb()` seen while its block runs (sampled in a thread, and once at the end).

    `with PeakMemory() as peak: ...` then `peak.mb`; `peak.samples` says how many readings it took."""

    def __init__(self, root: int | None = None, exclude: Collection[int] = ()) -> None:
        self.root, self.exclude = root, frozenset(exclude)
        self.mb = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._sample_until_stopped, name="runners-memory",
                                        daemon=True)

    def __enter__(self) -> PeakMemory:
        self.take()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.take()

    def take(self) -> float:
        """One sample now (from any thread); returns the seconds it took."""
        began = time.perf_counter()
        mb = tree_mb(self.root, self.exclude)
        with self._lock:
            self.mb = max(self.mb, mb)
            self.samples += 1
        return time.perf_counter() - began

    def _sample_until_stopped(self) -> None:
        interval = MIN_INTERVAL
        while not self._stop.wait(interval):
            interval = min(MAX_INTERVAL, max(MIN_INTERVAL, self.take() / SAMPLER_SHARE))


__all__ = ["KIND", "PeakMemory", "process_mb", "tree_mb", "tree_pids"]
