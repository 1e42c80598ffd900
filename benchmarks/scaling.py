"""Scaling: Monte Carlo pi (>= 10 s serially) on 2 workers, speedup per back-end, side by side.

    .venv/bin/python benchmarks/scaling.py [--quick] [--workers 2] [--backends ...]

Speedup = serial compute / back-end compute (the engine's compute phase: first batch out to last
result in; start-up and shutdown are printed beside it). The serial run is taken before and after the
back-ends and the faster of the two is used, so drift in machine speed cannot flatter a back-end.
A plain `multiprocessing.Pool.map` of the same items is printed as a reference for what the machine
allows at the time. Targets (issue 6): 1.90 for multiprocessing, futures, joblib and mpi; 1.80 for
ray and dask.
"""

from __future__ import annotations

from _common import PROCESS_BACKENDS, arguments, table, verdict, wait_for_quiet

import runners

TARGET = {"ray": 1.80, "dask": 1.80}


def pool_map_seconds(params: dict, workers: int) -> float:
    """The same items through a plain multiprocessing.Pool (started beforehand): what this machine
    allows right now, so a low figure can be told apart from a busy machine."""
    import multiprocessing
    import time

    from runners_tasks.pi import count_inside

    task = runners.load_task("pi")
    items = task.split(task.params(**params), runners.DEFAULT_SEED)
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.map(abs, range(workers))
        began = time.perf_counter()
        pool.map(count_inside, items)
        return time.perf_counter() - began


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=list(PROCESS_BACKENDS))
    options = parser.parse_args()
    params = {"samples": 4_000_000 if options.quick else 70_000_000}  # >= 10 s serially here
    wait_for_quiet(options.max_load)
    first = runners.run("pi", backend="serial", params=params)
    records = {b: runners.run("pi", backend=b, workers=options.workers, params=params)
               for b in options.backends}
    by_hand = pool_map_seconds(params, options.workers)
    second = runners.run("pi", backend="serial", params=params)
    serial = min(first.timings.compute, second.timings.compute)
    rows = [["serial", 1, serial, "", "", 1.0, "", ""]]
    for backend, record in records.items():
        assert record.check.ok and record.result == first.result, (backend, record.check)
        speedup = serial / record.timings.compute
        target = TARGET.get(backend, 1.90) if options.workers == 2 else 0.95 * options.workers
        rows.append([backend, options.workers, record.timings.compute, record.timings.startup,
                     record.timings.shutdown, speedup, target, verdict(speedup >= target)])
    speedup = serial / by_hand
    rows.append(["(Pool.map by hand)", options.workers, by_hand, "", "", speedup, "", "reference"])
    print(f"pi samples={params['samples']:,} (serial runs: {first.timings.compute:.2f} s and "
          f"{second.timings.compute:.2f} s)")
    print(table(["backend", "workers", "compute s", "startup s", "shutdown s", "speedup", "target", "met"],
                rows))


if __name__ == "__main__":
    main()
