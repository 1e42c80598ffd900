"""The driver's end of an mpiexec job that the back-end starts itself (no mpiexec around the driver).

The job's rank 0 (`python -m runners_mpi`) connects back over loopback with a fresh random authkey. The
driver keeps it ROUNDS_AHEAD rounds of batches ahead (the core's in-flight loop; a thread on rank 0 reads
them as they come, so neither side's send can block the other's) and ends a pass with None; rank 0 sends each
result, then "done". A job that had to ask for each batch would stall whenever the driver is busy with
the values of the last one. The job then waits for "again" (another pass: retries, or a batch reusing
it) or "close".
"""

from __future__ import annotations

import copy
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from typing import IO

from runners.backend import (
    Batch,
    BatchResult,
    Handles,
    RunnersError,
    WorkerLost,
    in_flight,
    pickle_batch,
    scratch_folder,
    signal_name,
)

from ._schemes import WORKER_ENVIRONMENT
from ._ship import loose_sources

ADDRESS = "RUNNERS_MPI_ADDRESS"
AUTHKEY = "RUNNERS_MPI_AUTHKEY"
CONNECT_SECONDS = 60.0  # mpiexec start-up plus importing runners and mpi4py on every rank
DRAIN_SECONDS = 2.0  # after an error: how long the job may finish its batches in flight quietly
# Rounds of batches (one per rank) sent ahead of the job's results: the round the ranks run, the one
# spmd deals ahead, and the one after, so that dealing ahead never waits for a round trip to the driver
# (with two, it did each round: tiny 1M's compute 1.7x longer).
ROUNDS_AHEAD = 3
HYDRA_SIGNALS = (6, 9, 11, 15)  # SIGABRT, SIGKILL, SIGSEGV, SIGTERM
# hydra's report of a rank that died, on its stdout: the WorkerLost (or, after a retry that worked,
# "1 worker lost, its batch retried") says it in one line
HYDRA_BANNER = re.compile(rb"(=+|=   .*|YOUR APPLICATION TERMINATED WITH THE EXIT STRING: .*|"
                          rb"This typically refers to a problem with your application\.|"
                          rb"Please see the FAQ page for debugging suggestions)\r?\n?")


class Relay(Handles[int]):
    """Starts `command` (an mpiexec line running `python -m runners_mpi`) and waits for its rank 0; a
    batch's handle is its id, and its result comes back on the connection. The job's files go in a
    scratch folder within `scratch` (default TMPDIR)."""

    def __init__(self, command: list[str], ranks: int, scratch: str | None = None) -> None:
        super().__init__("mpi")
        self.command = command
        self.ranks = ranks  # the job's computing ranks: batches in a round
        self.window = ROUNDS_AHEAD * ranks  # batches sent ahead of the job's results
        self.finished = False  # the current pass is over (the job waits for "again" or "close")
        self.ended = False  # this pass's batches are all sent (None went last)
        self.lost: WorkerLost | None = None  # why the job is gone, once it is
        self.abandoned = False  # a pass was stopped early: its batches may still come back
        self._held: dict[int, Batch] = {}  # sent and not answered: what a lost rank takes with it
        self.answered = 0  # results of this pass so far
        self._results: dict[int, BatchResult] = {}
        authkey = os.urandom(32)
        server = socket.create_server(("127.0.0.1", 0))
        # mpiexec leaves files in TMPDIR when it is stopped (hydra's hwloc topology): give the job a
        # folder of its own, removed with it (or, after a SIGKILLed driver, by the next run's sweep).
        self.tmp = scratch_folder("mpi", scratch)
        # Every rank only runs items: the limits of a pool worker (no nested pools, one BLAS thread).
        env = {**os.environ, **WORKER_ENVIRONMENT,
               ADDRESS: f"127.0.0.1:{server.getsockname()[1]}", AUTHKEY: authkey.hex(),
               # ranks import what the driver imported, task files included (their folder is on sys.path)
               "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "TMPDIR": self.tmp}
        # Own session: Ctrl-C reaches the driver only, which then stops the job itself. The job's
        # stdout goes to our stderr so that `--json` output stays clean, less hydra's banner.
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        start_new_session=True)
        self._output = threading.Thread(target=forward_without_banner, args=(self.process.stdout, 2),
                                        name="runners-mpi-output", daemon=True)
        self._output.start()
        deadline = time.monotonic() + CONNECT_SECONDS
        sources = None
        try:
            # Found while the ranks start (16-28 ms, mostly resolving paths), not after rank 0 calls
            # back: every rank waits for them before it starts MPI.
            sources = loose_sources()
            self.conn = self._accept(server, authkey, deadline)
            self.conn.send(sources)  # for every rank, at its start-up
            while not self.conn.poll(0.2):
                self._starting(deadline)
            self.conn.recv()  # ("ready",): every rank has started
        except BaseException as exc:
            self._stop()
            shutil.rmtree(self.tmp, ignore_errors=True)
            if isinstance(exc, EOFError | OSError) and sources is not None:  # rank 0 hung up: the job
                # ended in its start-up (an OSError before it is this process's, reading a task file)
                raise self._start_failed() from None
            raise
        finally:
            server.close()

    def _accept(self, server: socket.socket, authkey: bytes, deadline: float) -> Connection:
        server.settimeout(0.2)
        while True:
            try:
                sock, _ = server.accept()
                break
            except TimeoutError:
                self._starting(deadline)
        conn = unbuffered(sock)
        deliver_challenge(conn, authkey)
        answer_challenge(conn, authkey)
        return conn

    def _starting(self, deadline: float) -> None:
        """Raise if the job ended, or has not started, by `deadline`."""
        if self.process.poll() is not None or time.monotonic() > deadline:
            raise self._start_failed()

    def _start_failed(self) -> RunnersError:
        code = self.process.poll()
        self._output.join(1.0)  # what the ranks said about it comes first
        state = f"exited with code {code}" if code is not None else f"did not start in {CONNECT_SECONDS:g} s"
        return RunnersError(f"the mpi job {state} before its ranks started: {shlex.join(self.command)}")

    @property
    def open(self) -> bool:
        return self.lost is None

    @property
    def holding(self) -> bool:
        """Whether the job holds batches it has not answered."""
        return bool(self._held)

    def run(self, batches: Iterable[Batch]) -> Iterator[BatchResult]:
        """One pass: the batches (pickled here, unpickled on the rank that runs them), then "done"."""
        if self.finished:
            self._send("again")
            self.finished = self.ended = False
        self.answered = 0
        try:
            yield from in_flight(self, FirstRoundFirst(self, batches), self.window)
        except GeneratorExit:  # the run stopped mid-pass (an item failed, Ctrl-C): the job still holds
            self.abandoned = True  # batches whose ids the next run reuses; it needs a fresh job
            raise
        while self.lost is None and not self.finished:
            self.finished = self._receive() == ("done",)

    def end_pass(self) -> None:
        self._send(None)  # no more in this pass: the job ends it once it has answered these
        self.ended = True

    def submit(self, batch: Batch) -> int:
        self._send(pickle_batch(batch))  # a batch that does not pickle fails here: its own outcome
        self._held[batch.id] = batch
        return batch.id

    def wait(self, handles: list[int], timeout: float) -> Iterable[int]:
        if self.lost is None and not self.conn.poll(timeout):
            return ()
        if (message := self._receive()) is None:
            return handles  # the job is gone, and every batch it held with it
        _, result = message  # ("result", BatchResult)
        self._results[result.batch_id] = result
        self.answered += 1
        return (result.batch_id,)

    def outcome(self, handle: int, batch: Batch) -> BatchResult:
        self._held.pop(handle, None)
        return self._results.pop(handle, None) or BatchResult(handle, [], copy.copy(self.lost))

    def _send(self, message: object) -> None:
        try:
            self.conn.send(message)
        except (EOFError, OSError):
            pass  # the job is gone: the next receive says so

    def _receive(self) -> tuple | None:
        """The job's next message; None once it is gone (`lost` then says why)."""
        if self.lost is None:
            try:
                return self.conn.recv()
            except (EOFError, OSError):
                self.lost = self._loss()
        return None

    def _loss(self) -> WorkerLost:
        """Why the job ended, naming every batch it held (which rank held which is not known here)."""
        self.conn.close()
        code = self._wait(10)  # the job's segments go with its last rank (see _node)
        exitcode = code
        if code == 0:  # every rank exited 0, yet the job ended mid-pass: a rank left early, os._exit(0)
            state = "a rank exited early with EXIT(0); mpiexec exited with code 0"
        elif code is None:
            state = "mpiexec is still running"
        elif code < 0:
            state = f"mpiexec was killed by {signal_name(code)}"
        elif code in HYDRA_SIGNALS:  # hydra exits with N when a rank was killed by signal N
            exitcode = -code
            state = f"mpiexec exited with code {code}: a rank was killed by {signal_name(-code)}"
            if code == signal.SIGKILL:  # hydra's own clean-up kill after a rank ended early says the same
                state += ", or a rank ended early and hydra killed the others"
        else:
            state = f"mpiexec exited with code {code}"
        items = sorted(i for b in self._held.values() for i in b.indices)
        return WorkerLost(f"an MPI rank ended abnormally ({state})", "mpi", items, exitcode=exitcode,
                          exact=False)

    def close(self) -> None:
        """Let the job finish what it holds (briefly, after an error), then make sure it is gone."""
        try:
            if not self.finished and not self.ended:
                self.conn.send(None)  # no more batches: the job ends its pass after what it holds
                self.ended = True
            deadline = time.monotonic() + DRAIN_SECONDS
            while not self.finished and self.conn.poll(max(0.0, deadline - time.monotonic())):
                self.finished = self.conn.recv()[0] == "done"
            if self.finished:
                self.conn.send("close")
        except (EOFError, OSError):
            pass
        self.conn.close()
        if not self.finished or self._wait(30) is None:
            self._stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _wait(self, seconds: float) -> int | None:
        if not exited(self.process, seconds):
            return None
        code = self.process.wait()
        self._output.join(1.0)  # what the job printed last, before anyone reads its exit
        return code

    def _stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # hydra's mpiexec kills every rank and proxy on SIGTERM
            if self._wait(10) is None:
                self.process.kill()
        self.process.wait()


def exited(process: subprocess.Popen, seconds: float) -> bool:
    """Whether `process` exits within `seconds`, seen as it does. Popen.wait(timeout) sleeps up to 50 ms
    between looks: measured, half the spawned jobs' shutdowns took 50 ms longer than the job did."""
    if process.poll() is not None:
        return True
    try:
        pidfd = os.pidfd_open(process.pid)  # readable once the process has exited (Linux 5.3+)
    except (AttributeError, OSError):
        try:
            process.wait(seconds)
        except subprocess.TimeoutExpired:
            return False
        return True
    try:
        exit_seen = select.poll()  # (select.select refuses descriptors past 1023)
        exit_seen.register(pidfd, select.POLLIN)
        exit_seen.poll(seconds * 1000)
    finally:
        os.close(pidfd)
    return process.poll() is not None


def connect(address: tuple[str, int], authkey: bytes) -> Connection:
    """Rank 0's end of the relay (multiprocessing's `Client`, with the same handshake, unbuffered)."""
    conn = unbuffered(socket.create_connection(address))
    answer_challenge(conn, authkey)
    deliver_challenge(conn, authkey)
    return conn


def unbuffered(sock: socket.socket) -> Connection:
    """`sock` as a Connection whose messages leave at once. With Nagle's algorithm on (TCP's default),
    a small message sent while the last one is unacknowledged waits for that ack, which the other end
    delays by up to 40 ms: measured, a pass's first batches reached rank 0 40 ms late (after "again"),
    and the last results reached the driver 23 ms late, in every pass."""
    sock.setblocking(True)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Connection(sock.detach())


class FirstRoundFirst:
    """A pass's batches for the job (a Feed of the in-flight loop), the first round (one per rank)
    alone until a result is back, then `window` ahead.

    The engine sizes batches from results, and has none for the first: sent rounds ahead at once,
    they were all batches of one item, each round a whole round trip of spmd for nothing. Held back,
    the second round is sized from the first. Then the end of the pass is sent (`end_pass`).
    """

    def __init__(self, relay: Relay, batches: Iterable[Batch]) -> None:
        self.relay = relay
        self.batches = iter(batches)  # never closed here: a lost job leaves the rest to the next one
        self.first = max(1, relay.ranks)
        self.sent = 0
        self.finished = False

    def take(self, wait: float) -> Batch | None:
        if self.sent >= self.first and not self.relay.answered and self.relay.holding:
            return None  # the in-flight loop waits for results, then asks again
        batch = next(self.batches, None)
        if batch is None:
            self.finished = True
            self.relay.end_pass()
            return None
        self.sent += 1
        return batch


def forward_without_banner(stream: IO[bytes], fd: int) -> None:
    """Copy the job's output to `fd` line by line, less hydra's banner about a rank that died (and
    the blank line before it)."""
    blank = b""
    for line in stream:
        if HYDRA_BANNER.fullmatch(line):
            blank = b""
            continue
        if not line.strip():
            blank += line
            continue
        os.write(fd, blank + line)
        blank = b""
    os.write(fd, blank)
    stream.close()
