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


# One case per back-end: CPython's cases mostly wait (sleeps and timeouts of 0.5-6 s, ~23 s a
# back-end), so `pytest -n N` overlaps the back-ends' runs. Each run is its own interpreter with its
# own executors; subprocess.run kills it past its timeout.
@pytest.mark.slow
@pytest.mark.timeout(1500)  # also makes .venv-stdlib on first use (pip, minutes on a busy machine)
@pytest.mark.parametrize("backend", [b for b in installed_backends() if b not in ("asyncio", "auto")])
def test_cpythons_executor_cases_pass(backend, stdlib_python):
    done = subprocess.run([stdlib_python, str(ROOT / "tests" / "stdlib_futures.py"), backend],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    problem = _check(backend, done)
    assert problem is None, problem
