"""The driver's end of an mpiexec job that the back-end starts itself (no mpiexec around the driver).

The job's rank 0 (`python -m runners_mpi`) connects back over loopback with a fresh random authkey and
asks for batches one at a time ("next"); the driver answers with a batch, or None when there are no
more, and receives each result. So the job's scheme pulls batches exactly as it would from the engine.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge

from runners import Batch, BatchResult, ItemFailure, RunnersError, WorkerLost, portable_exception

ADDRESS = "RUNNERS_MPI_ADDRESS"
AUTHKEY = "RUNNERS_MPI_AUTHKEY"
CONNECT_SECONDS = 60.0  # mpiexec start-up plus importing runners and mpi4py on every rank
DRAIN_SECONDS = 2.0  # after an error: how long the job may finish its batches in flight quietly


class Relay:
    """Starts `command` (an mpiexec line running `python -m runners_mpi`) and waits for its rank 0."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.finished = False
        authkey = os.urandom(32)
        server = socket.create_server(("127.0.0.1", 0))
        env = {**os.environ, ADDRESS: "127.0.0.1:%d" % server.getsockname()[1], AUTHKEY: authkey.hex(),
               # ranks import what the driver imported, task files included (their folder is on sys.path)
               "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        # Own session: Ctrl-C reaches the driver only, which then stops the job itself. The job's
        # stdout goes to our stderr so that `--json` output stays clean.
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=2,
                                        start_new_session=True)
        try:
            self.conn = self._accept(server, authkey)
        except BaseException:
            self._stop()
            raise
        finally:
            server.close()

    def _accept(self, server: socket.socket, authkey: bytes) -> Connection:
        server.settimeout(0.2)
        deadline = time.monotonic() + CONNECT_SECONDS
        while True:
            try:
                sock, _ = server.accept()
                break
            except TimeoutError:
                code = self.process.poll()
                if code is not None or time.monotonic() > deadline:
                    state = f"exited with code {code}" if code is not None else "did not connect"
                    raise RunnersError(f"the mpi job {state} before its rank 0 connected: "
                                       f"{shlex.join(self.command)}") from None
        sock.setblocking(True)
        conn = Connection(sock.detach())
        deliver_challenge(conn, authkey)
        answer_challenge(conn, authkey)
        return conn

    def run(self, batches: Iterator[Batch]) -> Iterator[BatchResult]:
        held: dict[int, Batch] = {}  # sent and not yet answered: what a lost rank takes with it
        while True:
            try:
                kind, *payload = self.conn.recv()
            except (EOFError, OSError):
                yield self._lost(held)
                return
            if kind == "result":
                held.pop(payload[0].batch_id, None)
                yield payload[0]
            elif kind == "done":
                self.finished = True
                return
            else:  # "next"
                batch = next(batches, None)
                try:
                    self.conn.send(batch)
                except (EOFError, OSError):
                    continue  # the job is gone: the next recv reports it
                except Exception as exc:  # noqa: BLE001 - an item that does not pickle
                    failure = ItemFailure(batch.start, batch.items[0], portable_exception(exc),
                                          "".join(traceback.format_exception(exc)))
                    yield BatchResult(batch.id, [], failure)
                    return
                if batch is not None:
                    held[batch.id] = batch

    def _lost(self, held: dict[int, Batch]) -> BatchResult:
        code = self._wait(10)
        if code is None:
            state = "mpiexec is still running"
        elif code < 0:
            state = f"mpiexec was killed by {signal.Signals(-code).name}"
        else:  # hydra exits with N when a rank was killed by signal N
            hint = f" (a rank killed by {signal.Signals(code).name}?)" if code in (6, 9, 11, 15) else ""
            state = f"mpiexec exited with code {code}{hint}"
        items = [i for b in held.values() for i in range(b.start, b.start + len(b.items))]
        lost = WorkerLost(f"an MPI rank ended abnormally; {state}", "mpi", sorted(items),
                          exitcode=code)
        return BatchResult(next(iter(held), -1), [], lost)

    def close(self) -> None:
        """Let the job finish what it holds (briefly, after an error), then make sure it is gone."""
        try:
            deadline = time.monotonic() + DRAIN_SECONDS
            while not self.finished and self.conn.poll(max(0.0, deadline - time.monotonic())):
                kind = self.conn.recv()[0]
                if kind == "next":
                    self.conn.send(None)
                self.finished = kind == "done"
        except (EOFError, OSError):
            pass
        self.conn.close()
        if not self.finished or self._wait(30) is None:
            self._stop()

    def _stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # hydra's mpiexec kills every rank and proxy on SIGTERM
            if self._wait(10) is None:
                self.process.kill()
        self.process.wait()

    def _wait(self, seconds: float) -> int | None:
        try:
            return self.process.wait(seconds)
        except subprocess.TimeoutExpired:
            return None
