"""Scratch folders of a run: named after their creator and its host, and swept once that process is gone,
by a run on the same host only (a pid means nothing on another host, which may share the folder)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import runners


def test_a_dead_runs_folder_is_swept_and_a_live_ones_kept():
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    mine = runners.scratch_folder("probe")
    host = os.path.basename(mine).split("-")[3]  # runners-probe-PID-HOST-XXXXXXXX
    gone = os.path.join(tempfile.gettempdir(), f"runners-probe-{int(dead.stdout)}-{host}-x")
    os.makedirs(os.path.join(gone, "session"))  # with content, as Ray's or dask's would have
    try:
        assert os.path.basename(mine).startswith(f"runners-probe-{os.getpid()}-{host}-")
        assert runners.sweep_scratch() == [os.path.basename(gone)]
        assert not os.path.exists(gone) and os.path.isdir(mine)
    finally:
        os.rmdir(mine)


def test_a_folder_another_host_made_is_kept_whatever_its_pid():
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    mine = runners.scratch_folder("probe")
    host = os.path.basename(mine).split("-")[3]
    other = "000000" if host != "000000" else "ffffff"
    theirs = os.path.join(tempfile.gettempdir(), f"runners-probe-{int(dead.stdout)}-{other}-x")
    os.makedirs(theirs)
    try:
        assert os.path.basename(theirs) not in runners.sweep_scratch()
        assert os.path.isdir(theirs)
    finally:
        os.rmdir(mine)
        os.rmdir(theirs)
