"""MPICH's shared-memory segments (/dev/shm/mpich_shm_*) outlive a job whose ranks were killed.

MPICH unlinks them at MPI_Finalize, which a SIGKILLed rank never reaches. A segment that is ours,
that no live process maps and that is older than a job's start-up is such a leftover: remove it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

SHM = Path("/dev/shm")
STALE_SECONDS = 60.0  # a start-up sweep leaves younger segments alone: a job may be attaching to them


def stale_segments(min_age: float | None = STALE_SECONDS) -> set[str]:
    """Our mpich_shm_* segments that no process maps (min_age None: every one of ours, mapped or not)."""
    try:
        ours = {p.name: p.stat() for p in SHM.glob("mpich_shm_*") if p.stat().st_uid == os.getuid()}
    except OSError:
        return set()
    if min_age is None:
        return set(ours)
    now = time.time()
    candidates = {name for name, st in ours.items() if now - st.st_mtime >= min_age}
    return candidates - _mapped() if candidates else set()


def remove_segments(names: set[str]) -> None:
    for name in names:
        try:
            (SHM / name).unlink()
        except OSError:
            pass


def _mapped() -> set[str]:
    mapped: set[str] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:  # gone, or not ours
            continue
        mapped.update(line.rsplit("/", 1)[-1].split()[0] for line in text.splitlines()
                      if "/dev/shm/mpich_shm_" in line)
    return mapped
