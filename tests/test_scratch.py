"""Scratch folders of a run: named after their creator, and swept once that process is gone."""

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
    gone = os.path.join(tempfile.gettempdir(), f"runners-probe-{int(dead.stdout)}-x")
    os.makedirs(os.path.join(gone, "session"))  # with content, as Ray's or dask's would have
    try:
        assert os.path.basename(mine).startswith(f"runners-probe-{os.getpid()}-")
        assert runners.sweep_scratch() == [os.path.basename(gone)]
        assert not os.path.exists(gone) and os.path.isdir(mine)
    finally:
        os.rmdir(mine)
