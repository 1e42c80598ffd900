"""Waits on other ranks that return to Python every few milliseconds (DESIGN: "Waiting returns to
Python"). A blocking receive or collective waits in MPI's C code, where no signal handler runs: a rank
whose peer's host died or whose link was cut then hung there, deaf to Ctrl-C, SIGTERM and the run's time
limit. Here a rank polls instead, and a wait that has a deadline ends by naming the ranks (and hosts)
that did not answer; the job then ends with MPI_Abort, the one way that makes mpiexec stop every rank on
every host (a rank that merely exits, without MPI_Finalize, leaves the others running).
"""

from __future__ import annotations

import atexit
import ctypes
import fcntl
import os
import socket
import stat
import struct
import sys
import termios
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil

from ._shm import remove_segments
from ._sweeper import mapped

POLL_SECONDS = 0.005  # the longest pause between looks: a message's added latency, at most
# ... once a wait has gone on for BRISK_SECONDS; until then a pause is BRISK_PAUSE at most, as the
# waits inside a run are short (a rank's batch ending a few ms after another's)
BRISK_SECONDS, BRISK_PAUSE = 0.1, 0.001
ARRIVE_TAG, GO_TAG = 21, 22
# Start-up: a rank that has not arrived this long after rank 0 (or as long again as rank 0 took to
# start, if longer: ranks launched together take about as long) failed before MPI started, most
# likely on bad input that it has reported itself (bed: ranks arrive within ~0.5 s of each other).
ARRIVE_SECONDS = 3.0
# How long a rank that ends the job waits for mpiexec to take what it last wrote (ms, normally).
LAST_WORDS_SECONDS = 1.0


def poll(ready: Callable[[], bool], deadline: float | None = None) -> bool:
    """Call `ready` with growing pauses until it is true (True), or `deadline` passes (False)."""
    pause = 0.0001
    brisk_until = time.monotonic() + BRISK_SECONDS
    while not ready():
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return False
        time.sleep(pause)
        pause = min(2 * pause, BRISK_PAUSE if now < brisk_until else POLL_SECONDS)
    return True


def receive(comm: Any, source: int | None, tag: int, deadline: float | None = None) -> tuple[int, Any] | None:
    """The next message with `tag` from `source` (None: any rank): (its source, the object); None if it
    has not come, whole, by `deadline`."""
    from mpi4py import MPI

    source = MPI.ANY_SOURCE if source is None else source
    status = MPI.Status()
    found: list[Any] = []

    def probe() -> bool:
        message = comm.improbe(source, tag, status)
        if message is not None:
            found.append(message)
        return message is not None

    if not poll(probe, deadline):
        return None
    request = found[0].irecv()  # a large message's body may still be on its way: not a blocking recv
    arrived: list[Any] = []

    def complete() -> bool:
        done, value = request.test()
        if done:
            arrived.append(value)
        return done

    return (status.Get_source(), arrived[0]) if poll(complete, deadline) else None


def wait_sent(requests: list[Any], deadline: float | None = None) -> bool:
    """Wait until every one of the send `requests` has completed (True), or `deadline` passes (False)."""
    return poll(lambda: all(request.Test() for request in requests), deadline)


def send_all(comm: Any, messages: dict[int, Any], tag: int, deadline: float | None) -> dict[int, Any]:
    """Send each rank its message; the requests of those that had not gone by `deadline`, by rank (keep
    them: a request dropped before it completes frees the buffer that MPI is still sending)."""
    requests = {rank: comm.isend(message, dest=rank, tag=tag) for rank, message in messages.items()}
    wait_sent(list(requests.values()), deadline)
    return {rank: request for rank, request in requests.items() if not request.Test()}


def end_job(comm: Any, code: int, why: str) -> None:
    """Say why on stderr, then end the whole job, on every host, with exit code `code`."""
    print(f"Error: {why}", file=sys.stderr, flush=True)
    abort(comm, code)


def end_job_at_exit(comm: Any, code: int, why: str) -> None:
    """Say why now; end the whole job with `code` when this process exits (once the CLI has said the
    run's own error), instead of MPI_Finalize, which would wait for the ranks that did not answer."""
    print(f"runners: {why}; the job ends with MPI_Abort", file=sys.stderr, flush=True)
    atexit.register(abort, comm, code)


def abort(comm: Any, code: int) -> None:
    """MPI_Abort, once mpiexec has taken what this rank wrote to stdout and stderr (LAST_WORDS_SECONDS
    at most). A rank's output reaches mpiexec through a pipe that hydra stops reading when the job
    aborts: the line written just before, most often the one that says why the job ended, was lost in
    3 of 100 jobs (rank 0 printing, then aborting at once); 0 of 250 once the pipe was drained first."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):  # closed, or replaced by something that cannot
            pass
    poll(lambda: not (unread(1) or unread(2)), time.monotonic() + LAST_WORDS_SECONDS)
    comm.Abort(code)


def unread(fd: int) -> int:
    """How many bytes written to the pipe `fd` its reader has not taken yet; 0 if `fd` is no pipe (a
    terminal or a file has no reader to wait for)."""
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return 0
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        return 0


def started_seconds() -> float:
    """How long ago this process started."""
    return max(0.0, time.time() - psutil.Process().create_time())


def patience() -> float:
    """How long a rank waits at start-up for the others: they started with it and share its CPUs, so
    a load that slowed its own start slows theirs, give or take: twice its own start, at least
    ARRIVE_SECONDS. (Waiting only as long as its own start once failed jobs of 5 ranks at a load
    average of 20 on 2 cores: ranks that took 3.5-3.8 s gave up on slower siblings.)"""
    return max(ARRIVE_SECONDS, 2 * started_seconds())


def start_mpi() -> Any:
    """Initialise MPI, bounded: mpi4py's MPI module, once every rank of the job has started it.

    MPI_Init waits for every rank of the job to call it too, and a rank that failed before (bad input
    on that host: it said why, and exited) never will; mpi4py calls it holding the GIL, so no Python
    thread could notice. Called here through ctypes, which lets go of the GIL, while a watchdog exits
    (code 2, saying why) if it has not returned in time; the ranks waiting there all do the same, and
    mpiexec then ends as the last of them exits. No rank has started MPI, so none is left waiting.
    """
    import mpi4py

    if "mpi4py.MPI" not in sys.modules:
        mpi4py.rc.initialize = False
        mpi4py.rc.finalize = True  # at exit, as when mpi4py starts MPI itself
    from mpi4py import MPI

    if MPI.Is_initialized():  # the user's own code started it
        return MPI
    try:
        init_thread = ctypes.CDLL(MPI.__file__).MPI_Init_thread  # found among the module's libraries
    except (OSError, AttributeError):
        MPI.Init_thread(MPI.THREAD_MULTIPLE)  # unbounded, as before
        return MPI
    wait = patience()
    started = threading.Event()

    def give_up() -> None:
        if not started.wait(wait):
            print(f"Error: mpi: {socket.gethostname()}: MPI did not start within {wait:.1f} s: a rank of the "
                  "job never reached it (it may have said why above)", file=sys.stderr, flush=True)
            remove_segments(mapped("self"))  # MPICH made them before it waited; no sweeper watches yet
            os._exit(2)

    threading.Thread(target=give_up, name="runners-mpi-start", daemon=True).start()
    provided = ctypes.c_int()
    code = init_thread(None, None, MPI.THREAD_MULTIPLE, ctypes.byref(provided))
    started.set()
    if code != 0:
        raise RuntimeError(f"MPI_Init_thread failed with error code {code}")
    for comm in (MPI.COMM_SELF, MPI.COMM_WORLD):  # errors raise, as mpi4py sets them up when it starts MPI
        comm.Set_errhandler(MPI.ERRORS_RETURN)
    return MPI


def arrive(comm: Any, payload: Any = None) -> tuple[list[str], Any]:
    """Collective, at start-up: every rank tells rank 0 its host; once all have, rank 0 sends each the
    hosts of all and `payload` (what every rank needs before the run). Returns (hosts by rank, payload).

    Bounded on every side: ranks that never arrive (they failed before MPI started) end the job with
    exit code 2, naming them, as does a rank 0 that never answers."""
    rank, size, host = comm.Get_rank(), comm.Get_size(), socket.gethostname()
    wait = patience()
    if rank == 0:
        hosts = {0: host}
        deadline = time.monotonic() + wait
        while len(hosts) < size and (message := receive(comm, None, ARRIVE_TAG, deadline)) is not None:
            hosts[message[0]] = message[1]
        missing = [r for r in range(size) if r not in hosts]
        if missing:
            end_job(comm, 2, f"mpi: {_ranks(missing)} of {size} did not start the run within {wait:.1f} s "
                    f"of rank 0 (on {host}); see their own messages above, if any")
        everyone = [hosts[r] for r in range(size)]
        late = send_all(comm, {r: (everyone, payload) for r in range(1, size)}, GO_TAG,
                        time.monotonic() + wait)
        if late:
            end_job(comm, 2, f"mpi: {_ranks(list(late), everyone)} did not take the start of the run "
                    f"within {wait:.1f} s")
        return everyone, payload
    # rank 0 may wait `wait` for the last rank: this one waits longer, so that rank 0 speaks first
    wait = 2 * wait + ARRIVE_SECONDS
    deadline = time.monotonic() + wait
    if send_all(comm, {0: host}, ARRIVE_TAG, deadline) or (go := receive(comm, 0, GO_TAG, deadline)) is None:
        end_job(comm, 2, f"mpi: rank 0 did not start the run within {wait:.1f} s of rank {rank} (on {host}); "
                "see its own message above, if any")
        raise AssertionError("unreachable: MPI_Abort does not return")
    return go[1]


def _ranks(ranks: list[int], hosts: list[str] | None = None) -> str:
    named = [f"{r} ({hosts[r]})" if hosts else str(r) for r in ranks]
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(named)
