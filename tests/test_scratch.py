"""Scratch folders of a run: named after their creator, and swept once that process is gone, by a run on
the same host only (a pid means nothing on another host, or in another PID namespace, that shares the
folder)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import runners

MADE_ON = ".runners-made-on"


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    return int(done.stdout)


def folder_of(pid: int, made_on: str | None) -> str:
    """A folder as a run of `pid` leaves it, made where `made_on` says (None: it does not say)."""
    folder = os.path.join(tempfile.gettempdir(), f"runners-probe-{pid}-x{os.urandom(3).hex()}")
    os.makedirs(os.path.join(folder, "session"))  # with content, as Ray's or dask's would have
    if made_on is not None:
        with open(os.path.join(folder, MADE_ON), "w") as file:
            file.write(made_on)
    return folder


def test_a_dead_runs_folder_is_swept_and_a_live_ones_kept():
    mine = runners.scratch_folder("probe")
    with open(os.path.join(mine, MADE_ON)) as file:
        here = file.read()
    gone = folder_of(dead_pid(), here)
    try:
        assert os.path.basename(mine).startswith(f"runners-probe-{os.getpid()}-")
        assert os.path.basename(gone) in runners.sweep_scratch()
        assert not os.path.exists(gone) and os.path.isdir(mine)
    finally:
        shutil.rmtree(mine)


def test_a_folder_made_on_another_host_or_pid_namespace_is_kept_whatever_its_pid():
    mine = runners.scratch_folder("probe")
    with open(os.path.join(mine, MADE_ON)) as file:
        host, namespace = file.read().split(" ", 1)
    pid = dead_pid()
    theirs = [folder_of(pid, f"{host}x {namespace}"),  # another host
              folder_of(pid, f"{host} pid:[1]"),  # this host's name, another PID namespace
              folder_of(pid, None)]  # made by a runners that did not say where
    try:
        swept = runners.sweep_scratch()
        assert not {os.path.basename(folder) for folder in theirs} & set(swept)
        assert all(os.path.isdir(folder) for folder in theirs)
    finally:
        for folder in [mine, *theirs]:
            shutil.rmtree(folder)
