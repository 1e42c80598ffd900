"""The MPI side of the `sharing` task: `mpiexec -n K python -m runners_tasks._bcast N`.

Rank 0 makes the array 0, 1, ..., N-1 (the others an empty buffer), prints "ready" once every rank
is, waits for "go" on its stdin (mpiexec forwards it), then times `Bcast` of the buffer to every rank,
each rank's strided sum, and the gather of the sums, and prints them as one JSON line. Every rank keeps
its buffer until the driver, having weighed them, says "done".
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from mpi4py import MPI


def main(n: int) -> int:
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    array = np.arange(n, dtype=np.float64) if rank == 0 else np.empty(n, dtype=np.float64)
    comm.Barrier()
    go = True
    if rank == 0:
        print("ready", flush=True)
        go = sys.stdin.readline().strip() == "go"
    if not comm.bcast(go, root=0):
        return 1  # the driver went away: leave quietly, every rank together
    began = time.perf_counter()
    comm.Bcast(array, root=0)
    sums = comm.gather(float(array[rank::size].sum()), root=0)
    if rank == 0:
        print(json.dumps({"seconds": time.perf_counter() - began, "sums": sums}), flush=True)
        sys.stdin.readline()  # "done": the driver has weighed the ranks holding their buffers
    comm.Barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1])))
