"""Overhead: each back-end through runners against the same work written by hand with its library.

    .venv/bin/python benchmarks/overhead.py [--quick] [--repeat 3] [--backends ...]

Both sides run the same items (Monte Carlo pi, `count_inside` on 100 items of ~25 ms) on the same
number of workers, start-up EXCLUDED on both sides: each pool is started and warmed (one small job on
every worker) before the clock starts, and the clock stops when the last result is in the driver.
runners: `run_on(started_backend, plan)`; by hand: `Pool.map` (default chunksize),
`ProcessPoolExecutor.map`, `joblib.Parallel` defaults, `ray.get([f.remote(x) ...])`, dask
`client.gather(client.map(...))`. Sides alternate `--repeat` times; printed: best of each side and
the median of the paired ratios, on which the verdict is (this VM's speed swings by 10-30% within a
minute, so a best-of-N on either side can be one lucky run). Target: ratio <= 1.05.

mpi runs under `mpiexec -n WORKERS` on both sides, each a job of its own: runners is
`python -m runners exec pi --backend mpi` (its compute phase, from the --json record), by hand the
textbook scatter / compute / gather of benchmarks/_mpi_by_hand.py, timed from a barrier after every
rank has started. Their results must be equal.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _common import arguments, table, verdict, wait_for_quiet
from runners_tasks.pi import count_inside

import runners

BACKENDS = ("multiprocessing", "futures", "joblib", "mpi", "ray", "dask")
BY_HAND_MPI = Path(__file__).with_name("_mpi_by_hand.py")


def by_hand(backend: str, workers: int) -> tuple[Callable[[list], list], Callable[[], None]]:
    """(map items -> results, stop) for the raw library, started and warmed."""
    if backend == "multiprocessing":
        import multiprocessing

        pool = multiprocessing.get_context("fork").Pool(workers)
        return (lambda items: pool.map(count_inside, items)), lambda: (pool.terminate(), pool.join())
    if backend == "futures":
        from concurrent.futures import ProcessPoolExecutor

        executor = ProcessPoolExecutor(workers)
        return (lambda items: list(executor.map(count_inside, items))), executor.shutdown
    if backend == "joblib":
        from joblib import Parallel, delayed
        from joblib.externals.loky import get_reusable_executor

        def run(items: list) -> list:
            return Parallel(n_jobs=workers)(delayed(count_inside)(x) for x in items)

        return run, lambda: get_reusable_executor().shutdown(wait=True, kill_workers=True)
    if backend == "ray":
        import ray

        # runners' ray back-end, started beside it, has initialised ray in this process: share it.
        mine = not ray.is_initialized()
        if mine:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        remote = ray.remote(count_inside)
        stop = ray.shutdown if mine else _nothing
        return (lambda items: ray.get([remote.remote(x) for x in items])), stop
    if backend == "dask":
        from distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        client = Client(cluster)

        def stop() -> None:
            client.close()
            cluster.close()

        return (lambda items: client.gather(client.map(count_inside, items, pure=False))), stop
    raise ValueError(backend)


def _nothing() -> None:
    pass


def timed(fn: Callable[[], object]) -> float:
    began = time.perf_counter()
    fn()
    return time.perf_counter() - began


def compare(backend: str, workers: int, params: dict, items: list, repeat: int,
            expected: int) -> tuple[list[float], list[float]]:
    """Seconds per repeat for runners and by hand, alternating, both pools started and warm."""
    the_plan = runners.plan(runners.Job("pi", params, backend, workers=workers))
    warm_up = runners.plan(runners.Job("tiny", {"n": 4 * workers}, backend, workers=workers, chunksize=1))
    mine: list[float] = []
    raw: list[float] = []
    with the_plan.make_backend() as started:
        runners.run_on(started, warm_up)
        raw_map, stop = by_hand(backend, workers)
        try:
            raw_map([items[0]] * (2 * workers))  # warm: every worker has run once
            for _ in range(repeat):
                mine.append(timed(lambda: runners.run_on(started, the_plan)))
                out: list = []
                raw.append(timed(lambda: out.extend(raw_map(items))))  # noqa: B023 - called at once
                assert sum(out[:3]) == expected
        finally:
            stop()
    return mine, raw


def compare_mpi(workers: int, params: dict, repeat: int) -> tuple[list[float], list[float]]:
    """Compute seconds per repeat of runners' mpi back-end and of the same work by hand, each in a job
    of its own under mpiexec (start-up outside the clock on both sides), alternating."""
    from runners_mpi import mpiexec_command

    sets = [x for key in ("samples", "item_samples") for x in ("--set", f"{key}={params[key]}")]
    mine_command = mpiexec_command(workers, ["-m", "runners", "exec", "pi", "--backend", "mpi", "--json",
                                             *sets])
    raw_command = mpiexec_command(workers, [str(BY_HAND_MPI), "pi", json.dumps(params)])

    def job(command: list[str]) -> dict:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")
        return json.loads(done.stdout)

    mine: list[float] = []
    raw: list[float] = []
    for _ in range(repeat):
        record, by_hand = job(mine_command), job(raw_command)
        assert record["result"] == by_hand["result"], (record["result"], by_hand["result"])
        mine.append(record["timings"]["compute"])
        raw.append(by_hand["seconds"])
    return mine, raw


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS))
    options = parser.parse_args()
    params = {"samples": 1_000_000 if options.quick else 10_000_000, "item_samples": 100_000}
    items = runners.load_task("pi").split(runners.load_task("pi").params(**params), runners.DEFAULT_SEED)
    expected = sum(count_inside(x) for x in items[:3])
    wait_for_quiet(options.max_load)
    rows = []
    for backend in options.backends:
        if backend == "mpi":
            mine, raw = compare_mpi(options.workers, params, options.repeat)
        else:
            mine, raw = compare(backend, options.workers, params, items, options.repeat, expected)
        median = statistics.median(m / r for m, r in zip(mine, raw, strict=True))
        rows.append([backend, len(items), min(mine), min(raw), min(mine) / min(raw), median,
                     verdict(median <= 1.05)])
        print(f"  {backend}: runners {[round(x, 3) for x in mine]}, by hand {[round(x, 3) for x in raw]}",
              flush=True)
    print(f"pi {len(items)} items of {params['item_samples']:,} samples, {options.workers} workers, "
          f"start-up excluded on both sides, {options.repeat} alternating pairs")
    print(table(["backend", "items", "runners s (best)", "by hand s (best)", "best/best",
                 "median of runners/by hand", "<= 1.05"], rows))


if __name__ == "__main__":
    main()
