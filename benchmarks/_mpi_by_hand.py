"""A task's items mapped by hand with mpi4py, for benchmarks/overhead.py and peers.py: run under mpiexec.

    mpiexec -n 2 python benchmarks/_mpi_by_hand.py TASK '{"key": value, ...}'

The textbook SPMD program: rank 0 splits the task's items, scatters them round-robin, every rank
(rank 0 too) maps the task's item function over its share, rank 0 gathers the values, puts them back
in item order and combines them. Timed from a barrier (every rank started and imported) to the
combined result, as runners' compute phase is; rank 0 prints JSON {"seconds", "result"}.
"""

from __future__ import annotations

import json
import os
import sys

# As runners' mpi back-end does for a one-host job: MPI listens on loopback only (set before MPI starts).
os.environ.update({"UCX_NET_DEVICES": "lo", "FI_TCP_IFACE": "lo", "FI_SOCKETS_IFACE": "lo"})

from mpi4py import MPI  # noqa: E402

import runners  # noqa: E402


def main() -> None:
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    task = runners.load_task(sys.argv[1])
    params = task.params(**json.loads(sys.argv[2]))
    items = task.split(params, runners.DEFAULT_SEED) if rank == 0 else None  # runners splits before its clock
    comm.Barrier()
    began = MPI.Wtime()
    shares = comm.scatter([items[i::size] for i in range(size)] if rank == 0 else None, root=0)
    parts = comm.gather([task.run(item) for item in shares], root=0)
    if rank == 0:
        values: list = [None] * len(items)
        for i, part in enumerate(parts):
            values[i::size] = part
        result = task.combine(iter(values), params)
        print(json.dumps({"seconds": MPI.Wtime() - began, "result": result}))


if __name__ == "__main__":
    main()
