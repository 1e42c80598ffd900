"""CPython's own concurrent.futures cases against runners.Executor, on every back-end.

The cases live in CPython's `test` package, which this project's Python 3.11 lacks (Debian and pyenv
builds of 3.11 ship without test_concurrent_futures); a newer CPython beside it that has them gets a
venv of its own, `.venv-stdlib`, made here once (under a lock: two suites may run at once) with the
project installed as in the README. tests/stdlib_futures.py runs them and lists the skips, with why.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, installed_backends

VENV = ROOT / ".venv-stdlib"
PROBE = "import test.test_concurrent_futures.executor"


def _interpreter_with_the_cases() -> str | None:
    """A CPython 3.13+ whose `test` package has the concurrent.futures cases: $RUNNERS_STDLIB_PYTHON,
    python3.13/3.14 on PATH, or one of pyenv's."""
    pyenv = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates = [os.environ.get("RUNNERS_STDLIB_PYTHON"), shutil.which("python3.14"),
                  shutil.which("python3.13"),
                  *sorted(glob.glob(f"{pyenv}/versions/3.1[3-9]*/bin/python3"), reverse=True)]
    for python in filter(None, candidates):
        if subprocess.run([python, "-c", PROBE], capture_output=True, timeout=60).returncode == 0:
            return python
    return None


@pytest.fixture(scope="module")
def stdlib_python() -> str:
    python = VENV / "bin" / "python"
    with open(ROOT / ".venv-stdlib.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (python.exists() and (VENV / "ready").exists()):
            base = _interpreter_with_the_cases()
            if base is None:
                pytest.skip("no CPython 3.13+ with its test package (test.test_concurrent_futures) here; "
                            "set RUNNERS_STDLIB_PYTHON to one")
            shutil.rmtree(VENV, ignore_errors=True)
            subprocess.run([base, "-m", "venv", str(VENV)], check=True, timeout=120)
            subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", f"{ROOT}[all]"], check=True,
                           timeout=900, cwd=ROOT)
            (VENV / "ready").touch()
    return str(python)


# CPython's cases mostly wait (sleeps and timeouts of 0.5-6 s: ~23 s a back-end, under a second of
# CPU on the in-process ones), so the back-ends' runs overlap, a few at a time, the slowest to start
# first; each run is its own interpreter with its own executors, as when run one after another.
AT_ONCE = 3
FIRST = ("mpi", "joblib", "ray", "dask")  # a pool, mpiexec or cluster per run or per case: the longest


def _check(backend: str, done: subprocess.CompletedProcess) -> str | None:
    """What is wrong with one back-end's run, or None."""
    summary = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else {}
    if done.returncode != 0 or summary.get("failed") or "ran" not in summary:
        return f"{backend}: exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}"
    if summary["ran"] < 29:  # every case of the four mixins was collected
        return f"{backend}: only {summary['ran']} cases ran: {summary}"
    skipped = set(summary["skipped"])
    if not skipped <= {"test_interpreter_shutdown", "test_submit_after_interpreter_shutdown",
                       "test_hang_gh83386", "test_map_timeout"}:
        return f"{backend}: skipped {summary['skipped']}"
    print(backend, sys.version, summary)
    return None


def _run_overlapping(python: str, backends: list[str]) -> dict[str, subprocess.CompletedProcess]:
    """Each back-end's run of tests/stdlib_futures.py, AT_ONCE at a time; every run is ended by the
    time this returns (killed by pid past its 600 s, or if this is interrupted)."""
    waiting = sorted(backends, key=lambda b: b not in FIRST)
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    done: dict[str, subprocess.CompletedProcess] = {}
    try:
        while waiting or running:
            while waiting and len(running) < AT_ONCE:
                backend = waiting.pop(0)
                proc = subprocess.Popen([python, str(ROOT / "tests" / "stdlib_futures.py"), backend],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
                running[backend] = (proc, time.monotonic())
            for backend, (proc, began) in list(running.items()):
                try:  # the pipes are read to the end: a run's output never blocks it
                    out, err = proc.communicate(timeout=0.5 / len(running))
                except subprocess.TimeoutExpired:
                    if time.monotonic() - began < 600:
                        continue
                    proc.kill()
                    out, err = proc.communicate()
                    err += "\n(killed: still running after 600 s)"
                done[backend] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
                del running[backend]
    finally:
        for proc, _ in running.values():
            proc.kill()
            proc.communicate()
    return done


@pytest.mark.slow
@pytest.mark.timeout(1500)  # also makes .venv-stdlib on first use (pip, minutes on a busy machine)
def test_cpythons_executor_cases_pass_on_every_backend(stdlib_python):
    backends = [b for b in installed_backends() if b not in ("asyncio", "auto")]
    done = _run_overlapping(stdlib_python, backends)
    wrong = [problem for backend in backends if (problem := _check(backend, done[backend])) is not None]
    assert not wrong, "\n\n".join(wrong)
