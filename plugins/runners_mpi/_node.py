"""What the ranks on each host do around MPI itself: keep a one-host job's traffic on loopback, and
have the job's MPICH segments removed when its ranks there are gone, however they end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from runners.backend import run_batch

# The network devices the MPI library may use, for each netmod the mpich wheel can pick (UCX, OFI).
LOOPBACK_DEVICES = {"UCX_NET_DEVICES": "lo", "FI_TCP_IFACE": "lo", "FI_SOCKETS_IFACE": "lo"}
SWEEPER = Path(__file__).with_name("_sweeper.py")


def on_one_host() -> bool:
    """Every rank of the job runs on this host (the launcher says so: hydra, or Open MPI)."""
    for local, world in (("MPI_LOCALNRANKS", "PMI_SIZE"),
                         ("OMPI_COMM_WORLD_LOCAL_SIZE", "OMPI_COMM_WORLD_SIZE")):
        if os.environ.get(local) and os.environ.get(local) == os.environ.get(world):
            return True
    return False


def keep_on_loopback() -> None:
    """Before MPI starts: a job whose ranks are all on this host talks over loopback only. By
    default the MPI library listens on every network device (the machine's LAN address included),
    although one-host ranks reach each other through shared memory and loopback. A device the user
    chose is left as it is."""
    if on_one_host() and not set(LOOPBACK_DEVICES) & set(os.environ):
        os.environ.update(LOOPBACK_DEVICES)


def sweep_when_gone(comm: Any) -> None:
    """Collective: the first rank on each host starts a sweeper (`_sweeper.py`) that waits for every
    rank of the job on that host to end, then unlinks the MPICH segments they mapped and the topology
    file of hydra's proxy there (the ranks' parent)."""
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        pids = local.gather(os.getpid(), root=0)
    finally:
        local.Free()
    if pids is None:
        return
    from ._sweeper import mapped, topology_files

    # The segments as this rank maps them now: a job that dies at once may be gone before the
    # sweeper has read a single rank's maps.
    segments = ",".join(sorted(mapped("self")))
    # Its own session, no inherited descriptors, nothing on stdout or stderr: it must not hold the
    # job's pipes open after the job, nor be stopped with the job's process group. It forks and
    # exits at once, its child sweeping; a thread reaps it, as the Python it starts takes 17-28 ms,
    # which this rank's start-up (and the job's) would otherwise wait for.
    files = ",".join(topology_files(os.getppid()))
    sweeper = subprocess.Popen([sys.executable, "-I", "-S", str(SWEEPER), ",".join(map(str, pids)), segments,
                                files], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    threading.Thread(target=sweeper.wait, name="runners-mpi-sweeper", daemon=True).start()


class ItemStopped(Exception):
    """Raised inside the item a worker rank runs when mpiexec forwards Ctrl-C or SIGTERM to it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"the rank was told to stop ({signal.Signals(signum).name})")
        self.signum = signum

    def __reduce__(self) -> tuple:
        return (type(self), (self.signum,))


class _StopRequest:
    """The signal a worker rank was told to stop by, if any: process-wide, as signal handlers are."""

    signum: int | None = None


def stop_requested() -> int | None:
    """The signal this worker rank was told to stop by (it then runs no further item), or None."""
    return _StopRequest.signum


def stop_items_on_signals() -> None:
    """On a worker rank under the user's mpiexec, which forwards Ctrl-C and SIGTERM to every rank:
    stop the item this rank runs (so that rank 0, ending the job, is not kept waiting for it), and
    nothing else. Rank 0 ends the job and its finish tells this rank the exit code (130, 143); an
    exception raised while this rank waits in MPI would lose the message it waits for."""

    def stop_the_item(signum: int, frame: Any) -> None:
        _StopRequest.signum = signum  # and no item after this one: rank 0 may have sent another
        while frame is not None:
            if frame.f_code is run_batch.__code__:
                raise ItemStopped(signum)
            frame = frame.f_back

    signal.signal(signal.SIGINT, stop_the_item)
    signal.signal(signal.SIGTERM, stop_the_item)
