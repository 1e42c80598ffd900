"""`python -I -S _sweeper.py PIDS SEGMENTS FILES`: wait until every given rank (PIDS, comma-separated)
has ended, then unlink the MPICH segments (/dev/shm/mpich_shm_*) they mapped: SEGMENTS (comma-separated,
as the starting rank saw them) and any the ranks map later; and FILES, the topology files of hydra's
proxy on this host (comma-separated). Standard library only, run as a file: it starts in milliseconds
and imports nothing of the job it watches.

MPICH unlinks its segments at MPI_Finalize, which a rank that is SIGKILLed, aborted or stopped by
mpiexec never reaches. Hydra's proxy writes the host's topology to /tmp/hydra_hwloc_xmlfile_* for its
ranks to read at MPI_Init, and removes it when it exits normally, not after MPI_Abort. This process,
started by the job itself on each host (see `_node`), is the one party that outlives the job by design,
and only by a poll interval.
"""

from __future__ import annotations

import os
import re
import sys
import time

POLL_SECONDS = 0.1  # how long a segment may outlive the job's last rank on this host
MAPS_SECONDS = 2.0  # how often the ranks' maps are read again, for segments made after start-up
SEGMENT = re.compile(r"/dev/shm/(mpich_shm_\S+)")
TOPOLOGY_FILE = re.compile(r"/tmp/hydra_hwloc_xmlfile_\w+")  # hydra's mkstemp name; nothing else is swept


def started(pid: int) -> str | None:
    """The process's start time (its identity, as pids are reused); None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in "ZX" else fields[19]


def mapped(pid: int | str) -> set[str]:
    try:
        with open(f"/proc/{pid}/maps") as maps:
            return set(SEGMENT.findall(maps.read()))
    except OSError:
        return set()


def topology_files(proxy: int) -> list[str]:
    """The topology files that process `proxy` (a rank's parent: hydra's proxy) holds open (also used
    by the tests' three-host bed, for the hosts it kills)."""
    found = []
    try:
        descriptors = os.listdir(f"/proc/{proxy}/fd")
    except OSError:
        return found
    for descriptor in descriptors:
        try:
            target = os.readlink(f"/proc/{proxy}/fd/{descriptor}")
        except OSError:
            continue
        if TOPOLOGY_FILE.fullmatch(target):
            found.append(target)
    return found


def main(pids: list[int], segments: set[str], files: list[str]) -> None:
    ranks = {pid: started(pid) for pid in pids}
    read_at = time.monotonic() + MAPS_SECONDS  # the segments of start-up are given: the ranks may
    # all be gone before this process has started
    while ranks := {pid: when for pid, when in ranks.items() if when is not None and started(pid) == when}:
        if time.monotonic() >= read_at:
            for pid in ranks:
                segments |= mapped(pid)
            read_at = time.monotonic() + MAPS_SECONDS
        time.sleep(POLL_SECONDS)
    for path in [f"/dev/shm/{name}" for name in segments] + [f for f in files if TOPOLOGY_FILE.fullmatch(f)]:
        try:
            os.unlink(path)
        except OSError:  # MPICH or hydra removed it itself (a clean end), or another party did
            pass


if __name__ == "__main__":
    # Leave the rank that started us at once (a thread there reaps us), and live on as no one's child:
    # a runner's shut-down watchdog stops its children, and must not stop this.
    if os.fork() > 0:
        os._exit(0)
    main([int(pid) for pid in sys.argv[1].split(",")], set(filter(None, sys.argv[2].split(","))),
         list(filter(None, sys.argv[3].split(","))))
