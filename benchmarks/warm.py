"""Warm pools: several cells on one back-end pay its start-up once, not once per cell.

    .venv/bin/python benchmarks/warm.py [--quick] [--backends ...]

Cold: `runners.run` per cell (start, compute, shut down, each time). Warm: `runners.plan` +
`run_on` on one started back-end, as `runners batch` does for the cells of a group. Cells: pi at four
sizes. Both sides compute the same results; the table shows start-ups paid and the total time.
(futures and multiprocessing fork their workers on first use, so part of their start-up is in the
first cell's compute: their start+stop columns understate it.)
"""

from __future__ import annotations

import time

from _common import arguments, table, wait_for_quiet

import runners

BACKENDS = ("multiprocessing", "futures", "joblib", "mpi", "ray", "dask")


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS))
    options = parser.parse_args()
    scale = 50_000 if options.quick else 250_000
    cells = [{"samples": k * scale, "item_samples": scale // 10} for k in (1, 2, 3, 4)]
    wait_for_quiet(options.max_load)
    rows = []
    for backend in options.backends:
        began = time.perf_counter()
        cold = [runners.run("pi", backend=backend, workers=2, params=p) for p in cells]
        cold_total = time.perf_counter() - began
        began = time.perf_counter()
        plans = [runners.plan(runners.Job("pi", p, backend, workers=2)) for p in cells]
        with plans[0].make_backend() as started:
            started_at = time.perf_counter()
            warm = [runners.run_on(started, the_plan) for the_plan in plans]
            stopping = time.perf_counter()
        warm_total = time.perf_counter() - began
        assert [r.result for r in warm] == [r.result for r in cold]
        startup_cold = sum(r.timings.startup + r.timings.shutdown for r in cold)
        startup_warm = (started_at - began) + (warm_total - (stopping - began))
        rows.append([backend, len(cells), len(cells), startup_cold, 1, startup_warm, cold_total, warm_total,
                     cold_total / warm_total])
        print(f"  {backend}: cold {cold_total:.2f} s, warm {warm_total:.2f} s", flush=True)
    print(f"{len(cells)} pi cells ({', '.join(str(c['samples']) for c in cells)} samples), 2 workers")
    headers = ["backend", "cells", "start-ups cold", "start+stop cold s", "start-ups warm",
               "start+stop warm s", "total cold s", "total warm s", "cold/warm"]
    print(table(headers, rows))


if __name__ == "__main__":
    main()
