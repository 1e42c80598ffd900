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

from runners import Batch

from . import MpiBackend, MpiOptions
from ._relay import ADDRESS, AUTHKEY

GONE = object()  # the driver closed the connection


def read_all(conn: Connection, inbox: queue.Queue[Any]) -> None:
    """Move every message from the driver into `inbox` as it arrives, so the driver never waits on
    this rank to read (it sends batches ahead) while this rank waits on the driver to read results."""
    try:
        while True:
            inbox.put(conn.recv())
    except (EOFError, OSError):
        inbox.put(GONE)


def received(inbox: queue.Queue[Any]) -> Any:
    message = inbox.get()
    if message is GONE:
        raise EOFError("the driver closed the connection")
    return message


def batches(inbox: queue.Queue[Any]) -> Iterator[Batch]:
    while (batch := received(inbox)) is not None:
        yield batch


def main() -> None:
    host, port = os.environ[ADDRESS].rsplit(":", 1)
    authkey = bytes.fromhex(os.environ.pop(AUTHKEY))
    with MpiBackend(MpiOptions(scheme=sys.argv[1], spawn=False)) as backend:  # workers stay in here
        with Client((host, int(port)), authkey=authkey) as conn:
            inbox: queue.Queue[Any] = queue.Queue()
            threading.Thread(target=read_all, args=(conn, inbox), daemon=True).start()
            while True:  # one pass per engine call of run(); the driver ends with "close"
                for result in backend.run(batches(inbox)):
                    conn.send(("result", result))
                conn.send(("done",))
                if received(inbox) != "again":
                    break


if __name__ == "__main__":
    main()
