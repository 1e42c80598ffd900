"""Scaling: Monte Carlo pi (>= 10 s serially) on 2 workers, speedup per back-end, side by side.

    .venv/bin/python benchmarks/scaling.py [--quick] [--repeat 2] [--workers 2] [--backends ...]

Speedup = serial compute / back-end compute (the engine's compute phase: first batch out to last
result in; start-up and shutdown are printed beside it). This machine's speed drifts by 10-30% over
tens of seconds (a shared VM), so each back-end is started once and then run alternately with serial
runs of the same job, --repeat times each: speedup = best serial / best back-end run, both taken
within the same minute. A plain `multiprocessing.Pool.map` of the same items is measured the same
way as a reference for what the machine allows at the time. Targets (issue 6): 1.90 for
multiprocessing, futures, joblib and mpi; 1.80 for ray and dask.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from _common import PROCESS_BACKENDS, arguments, table, verdict, wait_for_quiet

import runners

TARGET = {"ray": 1.80, "dask": 1.80}


def alternate(parallel: Callable[[], float], serial: Callable[[], float], repeat: int) -> tuple[float, float]:
    """Best of `repeat` parallel and serial runs, taken in turn (P S P S ...)."""
    times: dict[str, list[float]] = {"parallel": [], "serial": []}
    for _ in range(repeat):
        times["parallel"].append(parallel())
        times["serial"].append(serial())
    return min(times["parallel"]), min(times["serial"])


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=list(PROCESS_BACKENDS))
    options = parser.parse_args()
    params = {"samples": 4_000_000 if options.quick else 70_000_000}  # >= 10 s serially here
    wait_for_quiet(options.max_load)
    truth = runners.run("pi", backend="serial", params=params)

    def serial() -> float:
        return runners.run("pi", backend="serial", params=params).timings.compute

    rows, serial_runs = [], []
    for backend in options.backends:
        compute, alone, startup = measure(backend, options.workers, params, truth.result, serial,
                                          options.repeat)
        serial_runs.append(alone)
        target = TARGET.get(backend, 1.90) if options.workers == 2 else 0.95 * options.workers
        rows.append([backend, options.workers, compute, alone, startup, alone / compute, target,
                     verdict(alone / compute >= target)])
        print(f"  {backend}: {compute:.3f} s against serial {alone:.3f} s", flush=True)
    by_hand, alone = alternate(lambda: pool_map_seconds(params, options.workers), serial, options.repeat)
    rows.append(["(Pool.map by hand)", options.workers, by_hand, alone, "", alone / by_hand, "", "reference"])
    print(f"pi samples={params['samples']:,}, best of {options.repeat} alternating runs per row; serial "
          f"runs took {min(serial_runs + [alone]):.2f}-{max(serial_runs + [alone]):.2f} s (best of each row)")
    print(table(["backend", "workers", "compute s", "serial s", "startup s", "speedup", "target", "met"],
                rows))


def measure(backend: str, workers: int, params: dict, truth: float, serial: Callable[[], float],
            repeat: int) -> tuple[float, float, float]:
    """(best compute, best serial beside it, start-up) for `backend`, started once for every run."""
    the_plan = runners.plan(runners.Job(task="pi", backend=backend, workers=workers, params=params))
    started = the_plan.make_backend()
    began = time.perf_counter()
    with started:  # start() on entry, shutdown() on exit
        startup = time.perf_counter() - began

        def parallel() -> float:
            record = runners.run_on(started, the_plan)
            assert record.check.ok and record.result == truth, (backend, record.check)
            return record.timings.compute

        compute, alone = alternate(parallel, serial, repeat)
    return compute, alone, startup


def pool_map_seconds(params: dict, workers: int) -> float:
    """The same items through a plain multiprocessing.Pool (started beforehand): what this machine
    allows right now, so a low figure can be told apart from a busy machine."""
    import multiprocessing

    from runners_tasks.pi import count_inside

    task = runners.load_task("pi")
    items = task.split(task.params(**params), runners.DEFAULT_SEED)
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.map(abs, range(workers))
        began = time.perf_counter()
        pool.map(count_inside, items)
        return time.perf_counter() - began


if __name__ == "__main__":
    main()
