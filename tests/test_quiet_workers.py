"""Workers told to stop, or finding their driver gone, exit quietly: no traceback of theirs reaches the
terminal the user reads.

Two things a user does: Ctrl-C in a terminal (SIGINT to the whole foreground process group: the runner
and every worker process it started in it), and killing the runner outright (SIGKILL), after which
workers that finish an item find nobody to send it to.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import runners
from tests.conftest import ROOT, installed_backends, tagged_processes

ITEM = """
import os
import time

def quick(item):
    # says which process runs items (a file per pid beside this module), then takes a moment
    open(os.path.join(os.path.dirname(__file__), "ran", str(os.getpid())), "a").close()
    time.sleep(0.05)
    return item
"""
# Process back-ends whose workers share the runner's process group (ray's and mpi's do not: their
# daemons and the job runners starts run in sessions of their own).
GROUPED = [b for b in ("multiprocessing", "futures", "joblib", "dask") if b in installed_backends()]
METHODS = {"multiprocessing": ["fork", "spawn", "forkserver"]}


def cases() -> list:
    return [pytest.param(b, m, id=f"{b}-{m}" if m else b) for b in GROUPED for m in METHODS.get(b, [None])]


def start(tmp_path, backend: str, method: str | None) -> tuple[subprocess.Popen, str]:
    module = tmp_path / f"quick_{uuid.uuid4().hex[:8]}.py"
    module.write_text(ITEM)
    (tmp_path / "ran").mkdir()
    tag = uuid.uuid4().hex
    method_set = ["--set", f"backend.start_method={method}"] if method else []
    proc = subprocess.Popen([sys.executable, "-m", "runners", "exec", f"{module}:quick", "--backend", backend,
                             "--workers", "2", "--chunksize", "1", "--set", "n=100000", *method_set],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,  # a process group of its own, as a shell job has
                            env={**os.environ, "RUNNERS_TEST_TAG": tag})
    return proc, tag


def wait_until_working(proc: subprocess.Popen, tmp_path, workers: int = 2) -> None:
    """Until `workers` processes of the run (not the runner itself) have run items."""
    deadline = time.monotonic() + 120
    while len({p.name for p in (tmp_path / "ran").iterdir()} - {str(proc.pid)}) < workers:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    time.sleep(0.5)  # items are now finishing twenty times a second on each worker


def finish(proc: subprocess.Popen, tag: str) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    deadline = time.monotonic() + 15
    while (left := tagged_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, [p.cmdline() for p in left]
    return out, err


@pytest.mark.parametrize(("backend", "method"), cases())
def test_ctrl_c_to_the_whole_process_group_prints_one_line_and_no_worker_traceback(backend, method, tmp_path):
    proc, tag = start(tmp_path, backend, method)
    wait_until_working(proc, tmp_path)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    out, err = finish(proc, tag)
    assert proc.returncode == 130, err
    assert not out
    assert err.strip().splitlines() == ["interrupted: pending work cancelled, workers stopped"], err


@pytest.mark.parametrize(("backend", "method"), cases())
def test_workers_whose_runner_was_sigkilled_print_nothing(backend, method, tmp_path):
    proc, tag = start(tmp_path, backend, method)
    wait_until_working(proc, tmp_path)
    proc.kill()  # the runner only: its workers find it gone
    out, err = finish(proc, tag)
    assert proc.returncode == -signal.SIGKILL
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    # A killed runner's folders are the next run's to sweep (README); multiprocessing's own pymp-*
    # folder (the forkserver's socket) is Python's to remove at a clean exit, which never came.
    runners.sweep_scratch()
    for leftover in Path(os.environ["TMPDIR"]).glob("pymp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
