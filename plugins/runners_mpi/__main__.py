"""`mpiexec -n N python -m runners_mpi SCHEME`: the ranks of a job the mpi back-end started itself.

Rank 0 connects back to the driver (see `_relay`) and feeds the driver's batches to the scheme; the
other ranks serve batches inside `start()` and exit there, as under a user's own mpiexec.
"""

from __future__ import annotations

import os
import sys
import threading
from multiprocessing.connection import Connection

from runners.backend import Arrivals

from . import MpiBackend, MpiOptions, launcher_rank
from ._relay import ADDRESS, AUTHKEY, connect
from ._waits import abort


def read_all(conn: Connection, inbox: Arrivals) -> None:
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

    abort(MPI.COMM_WORLD, 1)


def main() -> None:
    host, port = os.environ[ADDRESS].rsplit(":", 1)
    authkey = bytes.fromhex(os.environ.pop(AUTHKEY))
    backend = MpiBackend(MpiOptions(scheme=sys.argv[1], spawn=False))
    # Rank 0 connects first, before MPI starts: the driver's task files go to every rank at start-up.
    conn = connect((host, int(port)), authkey) if launcher_rank() == 0 else None
    if conn is not None:
        backend.shipped = conn.recv()
    with backend:  # worker ranks stay in here
        assert conn is not None
        with conn:
            conn.send(("ready",))
            inbox = Arrivals()  # a Feed: the in-flight loop never blocks on it
            threading.Thread(target=read_all, args=(conn, inbox), daemon=True).start()
            while True:  # one pass per engine call of run(); the driver ends with "close"
                for result in backend.run(inbox):
                    conn.send(("result", result))
                conn.send(("done",))
                inbox.reopen()  # between passes, the driver says "again" or "close"
                if inbox.take(None) != "again":
                    break


if __name__ == "__main__":
    main()
