"""pi by hand with mpi4py, for benchmarks/overhead.py: run under `mpiexec -n N`.

    mpiexec -n 2 python benchmarks/_mpi_by_hand.py SAMPLES ITEM_SAMPLES

The textbook SPMD program: rank 0 splits the items round-robin, scatters them, every rank (rank 0
too) counts its share, rank 0 gathers the counts. Timed from a barrier (every rank started and
imported) to the gathered result, as runners' compute phase is; rank 0 prints JSON.
"""

from __future__ import annotations

import json
import sys

from mpi4py import MPI
from runners_tasks.pi import PiParams, count_inside, split

import runners


def main() -> None:
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    params = PiParams(samples=int(sys.argv[1]), item_samples=int(sys.argv[2]))
    items = split(params, runners.DEFAULT_SEED) if rank == 0 else None  # runners splits before its clock
    comm.Barrier()
    began = MPI.Wtime()
    shares = comm.scatter([items[i::size] for i in range(size)] if rank == 0 else None, root=0)
    counts = comm.gather(sum(count_inside(item) for item in shares), root=0)
    if rank == 0:
        seconds = MPI.Wtime() - began
        print(json.dumps({"seconds": seconds, "result": 4.0 * sum(counts) / params.samples}))


if __name__ == "__main__":
    main()
