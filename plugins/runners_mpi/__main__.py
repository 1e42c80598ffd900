"""`mpiexec -n N python -m runners_mpi SCHEME`: the ranks of a job the mpi back-end started itself.

Rank 0 connects back to the driver (see `_relay`) and feeds the driver's batches to the scheme; the
other ranks serve batches inside `start()` and exit there, as under a user's own mpiexec.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from multiprocessing.connection import Client, Connection

from runners import Batch

from . import MpiBackend, MpiOptions
from ._relay import ADDRESS, AUTHKEY


def requests(conn: Connection) -> Iterator[Batch]:
    while True:
        conn.send(("next",))
        batch = conn.recv()
        if batch is None:
            return
        yield batch


def main() -> None:
    host, port = os.environ[ADDRESS].rsplit(":", 1)
    authkey = bytes.fromhex(os.environ.pop(AUTHKEY))
    with MpiBackend(MpiOptions(scheme=sys.argv[1], spawn=False)) as backend:  # workers stay in here
        with Client((host, int(port)), authkey=authkey) as conn:
            while True:  # one pass per engine call of run(); the driver ends with "close"
                for result in backend.run(requests(conn)):
                    conn.send(("result", result))
                conn.send(("done",))
                if conn.recv() != "again":
                    break


if __name__ == "__main__":
    main()
