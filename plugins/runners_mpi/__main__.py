"""`mpiexec -n N python -m runners_mpi SCHEME`: the ranks of a job the mpi back-end started itself.

Rank 0 connects back to the driver (see `_relay`) and feeds the driver's batches to the scheme; the
other ranks serve batches inside `start()` and exit there, as under a user's own mpiexec.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Iterator
from multiprocessing.connection import Client, Connection
from typing import Any

from runners.backend import WAIT_SECONDS, Parcel

from . import MpiBackend, MpiOptions, launcher_rank
from ._relay import ADDRESS, AUTHKEY


class Inbox:
    """The driver's messages as they arrive: during a pass, its parcels (a Feed for the in-flight loop,
    which must not block on it while results are in flight, and an iterator for spmd's rounds) until
    None ends the pass; between passes, "again" or "close"."""

    def __init__(self) -> None:
        self._messages: queue.Queue[Any] = queue.Queue()
        self.finished = False  # this pass's parcels have all come

    def put(self, message: Any) -> None:
        self._messages.put(message)

    def take(self, wait: float) -> Parcel | None:
        if self.finished:
            return None
        try:
            parcel = self._messages.get(timeout=wait) if wait > 0 else self._messages.get_nowait()
        except queue.Empty:
            return None
        self.finished = parcel is None
        return parcel

    def __iter__(self) -> Iterator[Parcel]:
        while not self.finished:
            if (parcel := self.take(WAIT_SECONDS)) is not None:
                yield parcel

    def again(self) -> bool:
        """After a pass: whether the driver starts another (else it closes the job)."""
        self.finished = False
        return self._messages.get() == "again"


def read_all(conn: Connection, inbox: Inbox) -> None:
    """Move every message from the driver into `inbox` as it arrives, so the driver never waits on
    this rank to read (it sends batches ahead) while this rank waits on the driver to read results.

    A driver that vanishes without "close" (SIGKILLed, or giving up on this job after an error) ends
    the whole job at once, on every host, even while an item runs: MPI_Abort, since mpiexec leaves the
    other ranks running when one merely exits.
    """
    try:
        while True:
            message = conn.recv()
            inbox.put(message)
            if isinstance(message, str) and message == "close":
                return
    except (EOFError, OSError):
        pass
    from mpi4py import MPI

    MPI.COMM_WORLD.Abort(1)


def main() -> None:
    host, port = os.environ[ADDRESS].rsplit(":", 1)
    authkey = bytes.fromhex(os.environ.pop(AUTHKEY))
    backend = MpiBackend(MpiOptions(scheme=sys.argv[1], spawn=False))
    # Rank 0 connects first, before MPI starts: the driver's task files go to every rank at start-up.
    conn = Client((host, int(port)), authkey=authkey) if launcher_rank() == 0 else None
    if conn is not None:
        backend.shipped = conn.recv()
    with backend:  # worker ranks stay in here
        assert conn is not None
        with conn:
            conn.send(("ready",))
            inbox = Inbox()
            threading.Thread(target=read_all, args=(conn, inbox), daemon=True).start()
            while True:  # one pass per engine call of run(); the driver ends with "close"
                for result in backend.run(inbox):
                    conn.send(("result", result))
                conn.send(("done",))
                if not inbox.again():
                    break


if __name__ == "__main__":
    main()
