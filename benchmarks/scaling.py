"""Scaling: Monte Carlo pi (>= 10 s serially) on 2 workers, speedup per back-end, side by side.

    .venv/bin/python benchmarks/scaling.py [--quick] [--workers 2] [--backends ...]

Speedup = serial compute / back-end compute (the engine's compute phase: first batch out to last
result in; start-up and shutdown are printed beside it). The serial run is taken before and after the
back-ends and the faster of the two is used, so drift in machine speed cannot flatter a back-end.
Targets (issue 6): 1.90 for multiprocessing, futures, joblib and mpi; 1.80 for ray and dask.
"""

from __future__ import annotations

from _common import PROCESS_BACKENDS, arguments, table, verdict, wait_for_quiet

import runners

TARGET = {"ray": 1.80, "dask": 1.80}


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=list(PROCESS_BACKENDS))
    options = parser.parse_args()
    params = {"samples": 4_000_000 if options.quick else 50_000_000}
    wait_for_quiet(options.max_load)
    first = runners.run("pi", backend="serial", params=params)
    records = {b: runners.run("pi", backend=b, workers=options.workers, params=params)
               for b in options.backends}
    second = runners.run("pi", backend="serial", params=params)
    serial = min(first.timings.compute, second.timings.compute)
    rows = [["serial", 1, serial, "", "", 1.0, "", ""]]
    for backend, record in records.items():
        assert record.check.ok and record.result == first.result, (backend, record.check)
        speedup = serial / record.timings.compute
        target = TARGET.get(backend, 1.90) if options.workers == 2 else 0.95 * options.workers
        rows.append([backend, options.workers, record.timings.compute, record.timings.startup,
                     record.timings.shutdown, speedup, target, verdict(speedup >= target)])
    print(f"pi samples={params['samples']:,} (serial runs: {first.timings.compute:.2f} s and "
          f"{second.timings.compute:.2f} s)")
    print(table(["backend", "workers", "compute s", "startup s", "shutdown s", "speedup", "target", "met"],
                rows))


if __name__ == "__main__":
    main()
