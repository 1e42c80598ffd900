"""The `mpi` back-end: batches run on MPI ranks through mpi4py.

Two ways to use it:
- under mpiexec (`mpiexec -n 4 python -m runners exec pi --backend mpi`): every rank runs the same
  command; rank 0 drives the engine, prints and decides the exit code; in `start()` the other ranks
  become workers, serve batches until rank 0 stops them, then exit with rank 0's code, printing nothing.
- without mpiexec (a plain `runners exec`, or `runners.run(...)` in Python): the back-end starts
  `mpiexec -n N python -m runners_mpi` itself; that job's rank 0 relays batches over an authenticated
  loopback connection. The driver never initialises MPI, so it can run many jobs in one process.
"""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from runners.backend import Backend, Batch, BatchResult, ConfigError, Feed, param

from ._node import keep_on_loopback, stop_items_on_signals, sweep_when_gone
from ._relay import Relay
from ._schemes import Work, limit_worker
from ._ship import Modules, install
from ._shm import remove_segments, stale_segments
from ._waits import abort, arrive, start_mpi

# Set by the launchers that start MPI processes (hydra/MPICH, PMIx/Open MPI): we run under mpiexec.
LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE")
# How hydra's mpiexec reaches other hosts (its -launcher; `mpiexec --help` lists the same)
Launcher = Literal["ssh", "rsh", "fork", "slurm", "ll", "lsf", "sge", "manual", "persist"]


@dataclass(frozen=True)
class MpiOptions:
    # spmd is the default (benchmarks/mpi_schemes.py, README "MPI"): with as many ranks as cores,
    # the usual `mpiexec -n`, every rank computes and it ran 1.6-5x faster than master-worker,
    # which gives a rank to dispatching; master-worker is ahead only when ranks outnumber cores.
    scheme: Literal["spmd", "master-worker"] = param(
        "spmd", help="spmd: every rank, rank 0 included, runs one batch per scatter/gather round; "
        "master-worker: rank 0 hands batches to whichever rank is free (mpi4py's MPICommExecutor)")
    hostfile: str | None = param(
        None, help="hosts for the mpiexec that runners starts itself (mpiexec -f FILE); under your "
        "own mpiexec pass -f FILE to it instead")
    launcher: Launcher | None = param(
        None, help="how the mpiexec that runners starts reaches the hosts of the hostfile (hydra's "
        "-launcher; None: hydra's default, ssh, or HYDRA_LAUNCHER)")
    launcher_exec: str | None = param(
        None, help="the program that launcher runs (hydra's -launcher-exec), an executable file, "
        "e.g. /usr/bin/ssh or a wrapper of your own")
    spawn: bool = param(
        True, help="without mpiexec: start `workers` ranks with mpiexec in the background; "
        "false: fail at once with the mpiexec command to use")


def find_mpiexec() -> str:
    """The mpiexec beside this Python (the mpich wheel's, in a virtualenv), else the one on PATH."""
    beside = Path(sys.executable).with_name("mpiexec")
    found = str(beside) if beside.is_file() else shutil.which("mpiexec")
    if found is None:
        raise ConfigError(f"mpiexec: not found beside {sys.executable} nor on PATH; "
                          "pip install 'runners[mpi]' (the mpich wheel brings one)")
    return found


def mpiexec_command(n: int, args: list[str], hostfile: str | None = None, launcher: str | None = None,
                    launcher_exec: str | None = None) -> list[str]:
    """The command that runs `python ARGS` on `n` MPI ranks, e.g. for `runners batch`:

    `mpiexec_command(4, ["-m", "runners", "exec", "pi", "--backend", "mpi", "--json"])`.
    """
    check_files(hostfile, launcher_exec)
    hosts = ["-f", hostfile] if hostfile else []
    hosts += ["-launcher", launcher] if launcher else []
    hosts += ["-launcher-exec", launcher_exec] if launcher_exec else []
    return [find_mpiexec(), *hosts, "-n", str(n), sys.executable, *args]


def check_files(hostfile: str | None, launcher_exec: str | None) -> None:
    """Raise a ConfigError naming the option, unless the files that the options name are usable."""
    if hostfile is not None and not Path(hostfile).is_file():
        raise ConfigError(f"backend.hostfile: no such file {hostfile!r}", key="backend.hostfile")
    program = Path(launcher_exec) if launcher_exec is not None else None
    if program is not None and not (program.is_file() and os.access(program, os.X_OK)):
        state = "not executable" if program.is_file() else "no such file"
        raise ConfigError(f"backend.launcher_exec: {state} {launcher_exec!r}; name the launcher's program, "
                          "e.g. /usr/bin/ssh", key="backend.launcher_exec")


def under_mpiexec() -> bool:
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def launcher_rank() -> int:
    """This process's rank as the launcher set it (0 when there is no launcher), without MPI."""
    for name in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


class MpiBackend(Backend):
    """Runs batches on MPI ranks: those of the surrounding mpiexec, or of one it starts itself."""

    name = "mpi"
    Options = MpiOptions
    requires = ("mpi4py",)
    install = "pip install 'runners[mpi]'"
    separate_processes = True
    pickles_items = True
    distributed = True
    # With the job it starts itself: a lost rank ends the job, and every batch in flight is lost with
    # it. Under the user's mpiexec, mpiexec ends the whole job instead (tests/test_mpi.py).
    lost_items = "in flight"
    # Not names_signal: mpiexec reports one exit status for the whole job, and when a rank ends early
    # (os._exit(0)) hydra SIGKILLs the others, whose status then often wins under load (code 9 in 10
    # of 25 such 3-rank jobs beside 4 CPU burners, 0 in the same jobs on a quiet machine). The error
    # says what mpiexec said, and that it may be either.

    _scheme: Any = None
    # What rank 0 hands every rank at start-up: in a job the back-end started, the driver's task files
    # that the other hosts may not have (set by `__main__`)
    shipped: Modules = []
    _relay: Relay | None = None
    _exit_code = 0

    def start(self) -> None:
        try:
            check_files(self.options.hostfile, self.options.launcher_exec)
        except ConfigError:
            if launcher_rank() > 0:
                sys.exit(2)  # every rank finds it; only rank 0 says so
            raise
        self.runs_in_rounds = self.options.scheme == "spmd"  # one batch per rank per round (_schemes)
        if launcher_rank() == 0:  # a backstop: jobs whose sweeper was itself killed (see _node)
            remove_segments(stale_segments())
        # master-worker gives a rank to dispatching: one more rank for the same number computing
        ranks = self.workers + (1 if self.options.scheme == "master-worker" else 0)
        hosts = (self.options.hostfile, self.options.launcher, self.options.launcher_exec)
        if under_mpiexec():
            self._start_ranks()
        elif self.options.spawn:
            command = mpiexec_command(ranks, ["-m", "runners_mpi", self.options.scheme], *hosts)
            # A job that replaces a lost one keeps its files where the first did (TMPDIR at start-up).
            self._new_relay = functools.partial(Relay, command, self.workers, tempfile.gettempdir())
            self._relay = self._new_relay()
            self.on_shutdown(lambda: self._relay.close())  # the job of the moment: a lost one is replaced
        else:
            raise ConfigError("the mpi back-end needs MPI ranks (backend.spawn is false); run: "
                              + shlex.join(mpiexec_command(ranks, _this_command(), *hosts)))

    def _start_ranks(self) -> None:
        keep_on_loopback()  # before MPI starts
        MPI = start_mpi()

        from ._schemes import SCHEMES

        # Wait until every rank has started and imported the task, here, in start-up: else rank 0's
        # first round waits for them, and that counted as compute. Bounded: see `arrive`.
        hosts, modules = arrive(MPI.COMM_WORLD, self.shipped)
        install(modules)
        sweep_when_gone(MPI.COMM_WORLD)
        if MPI.COMM_WORLD.Get_rank() == 0:
            self._scheme = SCHEMES[self.options.scheme](MPI.COMM_WORLD, hosts)
            self.on_shutdown(lambda: self._scheme.finish(self._exit_code))  # ranks leave with rank 0's code
            self.workers = self._scheme.workers  # the ranks decide, not --workers
            return
        limit_worker()  # this rank only runs items: no nested pools, one BLAS thread
        stop_items_on_signals()  # rank 0 reports Ctrl-C and SIGTERM, and ends the job
        try:
            code = SCHEMES[self.options.scheme](MPI.COMM_WORLD, hosts).serve()
        except BaseException:  # a worker that cannot go on must not leave the others waiting
            import traceback

            traceback.print_exc()
            code = 1  # Abort does not return, but should it, leave with a failure
            abort(MPI.COMM_WORLD, 1)
        # Leave the way rank 0 does, through the CLI (which lets SystemExit pass silently); MPI is
        # finalised at interpreter exit as usual.
        sys.exit(code)

    def run(self, batches: Work) -> Iterator[BatchResult]:
        """Batches on the job this back-end started, or on the ranks of the mpiexec around it."""
        if self._relay is not None:
            return self._run_spawned(batches)
        return self._scheme.run(batches)

    def _run_spawned(self, batches: Iterator[Batch] | Feed) -> Iterator[BatchResult]:
        """Batches on the job this back-end started; a job that lost a rank, or still holds batches of
        a run that stopped early, is replaced, and the remaining batches (and the engine's retries, in
        a later pass) run on the fresh one."""
        while True:
            if self._relay.lost is not None or self._relay.abandoned:
                self._relay.close()
                self._relay = self._new_relay()
            yield from self._relay.run(batches)
            if self._relay.lost is None:
                return

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> None:
        self._exit_code = exit_code(exc)  # what worker ranks leave with
        super().__exit__(kind, exc, tb)


def exit_code(exc: BaseException | None) -> int:
    """The code the CLI will exit with for `exc` (None: success)."""
    if exc is None:
        return 0
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else 1
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return getattr(exc, "exit_code", 1)


def _this_command() -> list[str]:
    if Path(sys.argv[0]).name in ("__main__.py", "runners"):  # python -m runners, or the script
        return ["-m", "runners", *sys.argv[1:]]
    return sys.argv


__all__ = ["MpiBackend", "MpiOptions", "find_mpiexec", "mpiexec_command", "under_mpiexec"]
