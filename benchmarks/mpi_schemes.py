"""Which MPI scheme should be the default? Time both on the benchmark workloads under real mpiexec.

    .venv/bin/python benchmarks/mpi_schemes.py [--ranks 2 3 4] [--repeat 3] [--quick]

Each cell is `mpiexec -n N python -m runners exec TASK --backend mpi --set backend.scheme=S --json`;
we report rank 0's compute time (the engine's: first batch out to last result in, start-up excluded)
and the whole command's wall time, the best of `--repeat` runs. master-worker computes on N-1 ranks
(rank 0 only dispatches), spmd on all N: compare N+1 master-worker ranks with N spmd ranks as well.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from runners_mpi import mpiexec_command

SCHEMES = ("master-worker", "spmd")
WORKLOADS = {  # the benchmark workloads: pi (>= 10 s serial here), primes, tiny (pure overhead)
    "pi": ["samples=50000000"],
    "primes": [],
    "tiny": ["n=20000"],
    "factorize": [],  # few, uneven items: where rounds wait for their slowest batch
}
QUICK = {"pi": ["samples=4000000"], "primes": ["stop=130000"], "tiny": ["n=2000"], "factorize": []}


def one_run(task: str, sets: list[str], ranks: int, scheme: str) -> tuple[float, float]:
    """(compute, wall) seconds; scheme "serial": the serial back-end without mpiexec, for reference."""
    args = ["-m", "runners", "exec", task, "--json", *[x for s in sets for x in ("--set", s)]]
    if scheme == "serial":
        command = [sys.executable, *args]
    else:
        command = mpiexec_command(ranks, [*args, "--backend", "mpi", "--set", f"backend.scheme={scheme}"])
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"{task} on {ranks} ranks ({scheme}) failed:\n{done.stderr}")
    record = json.loads(done.stdout)
    assert record["check"]["ok"] is not False, record["check"]
    return record["timings"]["compute"], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="small workloads (a smoke test)")
    parser.add_argument("--tasks", nargs="+", default=list(WORKLOADS))
    options = parser.parse_args()
    workloads = QUICK if options.quick else WORKLOADS
    print(f"{'task':<8}{'ranks':>6}  {'scheme':<14}{'compute s':>10}{'wall s':>9}  spmd/master-worker")
    for task in options.tasks:
        compute, wall = min(one_run(task, workloads[task], 1, "serial") for _ in range(options.repeat))
        print(f"{task:<8}{1:>6}  {'serial':<14}{compute:>10.3f}{wall:>9.3f}", flush=True)
        for ranks in options.ranks:
            best = {}
            for scheme in SCHEMES:
                runs = [one_run(task, workloads[task], ranks, scheme) for _ in range(options.repeat)]
                best[scheme] = min(runs)
                compute, wall = best[scheme]
                ratio = f"{best['spmd'][0] / best['master-worker'][0]:.2f}" if scheme == "spmd" else ""
                print(f"{task:<8}{ranks:>6}  {scheme:<14}{compute:>10.3f}{wall:>9.3f}  {ratio}", flush=True)


if __name__ == "__main__":
    main()
