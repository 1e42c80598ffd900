"""The leftover checks of conftest.py blame a test only for what its own processes made.

Other copies of the suite run beside this one on the same machine; their MPI jobs, Ray and Dask leave
segments in /dev/shm while this test runs. These cases show the Witness telling this test's segments
(made or mapped by its own processes) from those of processes it did not start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from tests.conftest import Witness, processes_with, run_cli


def test_a_segment_named_for_a_process_of_this_test_is_its_own_and_one_of_another_is_not():
    witness = Witness()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
    try:
        witness.sample()
    finally:
        child.wait()
        witness.stop()
    assert witness.owns(f"runners-{child.pid}-0123456789ab")
    assert witness.owns(f"sem.loky-{os.getpid()}-abc")  # this interpreter's own
    assert not witness.owns("runners-1-0123456789ab")  # init's: never a process of this test
    assert not witness.owns("mpich_shm_00000000_0")  # no rank of this test mapped it
    assert witness.owns("some_unknown_name")  # says nothing of its maker: blamed


mpi4py = pytest.importorskip("mpi4py")

HOLD = """
import os, sys, time
from mpi4py import MPI
MPI.COMM_WORLD.Barrier()
open(sys.argv[1] + "." + str(MPI.COMM_WORLD.Get_rank()), "w").close()
while os.path.exists(sys.argv[1]):
    time.sleep(0.05)
"""


def mpich_segments_mapped_by(pids: list[int]) -> set[str]:
    found = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as maps:
                found.update(line.rsplit("/", 1)[-1].split()[0] for line in maps
                             if "/dev/shm/mpich_shm_" in line)
        except OSError:
            continue
    return found


def test_an_mpi_job_of_another_process_tree_is_not_blamed_and_one_of_this_test_is(tmp_path, no_leftovers):
    from runners_mpi import find_mpiexec

    script, flag = tmp_path / "hold.py", tmp_path / "hold"
    script.write_text(HOLD)
    flag.touch()
    marker = uuid.uuid4().hex
    # Another suite's job: started through a shell that exits at once, so its mpiexec is no
    # descendant of this interpreter (as a job of another pytest on the machine is not).
    subprocess.run(["sh", "-c", '"$@" >/dev/null 2>&1 &', "sh", find_mpiexec(), "-n", "2",
                    sys.executable, str(script), str(flag)], check=True,
                   env={**os.environ, "RUNNERS_FOREIGN": marker})
    try:
        deadline = time.monotonic() + 60
        while not all((tmp_path / f"hold.{r}").exists() for r in (0, 1)) and time.monotonic() < deadline:
            time.sleep(0.1)
        ranks = [p.pid for p in marked(marker)]
        theirs = mpich_segments_mapped_by(ranks)
        assert theirs, "the other job's ranks map no MPICH segment"
        no_leftovers.sample()
        assert not any(no_leftovers.owns(name) for name in theirs)
        # and a job of this test's own, through the CLI, is seen with its run's tag
        # (its ranks live a second at least: the witness samples every 0.2 s, late under load)
        done = run_cli("exec", "iowait", "--backend", "mpi", "--workers", "2", "--set", "n=4",
                       "--set", "seconds=0.5", timeout=120)
        assert done.returncode == 0, done.stderr
        mine = no_leftovers.segments_of(done.tag)
        assert mine and all(no_leftovers.owns(name) for name in mine)
        assert not mine & theirs
    finally:
        flag.unlink()
        for name in ("hold.0", "hold.1"):
            (tmp_path / name).unlink(missing_ok=True)
    deadline = time.monotonic() + 30  # the other job ends on its own, its segments with it
    while marked(marker) and time.monotonic() < deadline:
        time.sleep(0.1)


def marked(marker: str) -> list[psutil.Process]:
    return processes_with("RUNNERS_FOREIGN", marker)
