"""Fine-grained work: 1,000,000 tiny items (x + 1) on every process back-end, and the batch sizing.

    .venv/bin/python benchmarks/finegrained.py [--quick] [--repeat 3] [--backends ...]

1. Each back-end against serial (compute phase; start-up printed beside it). Target: within 3x.
2. Against `ProcessPoolExecutor.map(add_one, items)` with its default chunksize=1, timed on 100,000
   items (start-up included) and scaled x10, because 1,000,000 that way takes minutes. Target: >= 50x.
3. Automatic batching (chunksize=None: sized from the measured item cost) against the rule of thumb
   chunksize = len // (workers * 4), on tiny items and on ~5 ms pi items, compute phase, sides
   alternating, best of --repeat. Target: automatic never slower by more than 10% (ratio <= 1.10).
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor

from _common import PROCESS_BACKENDS, arguments, table, verdict, wait_for_quiet
from runners_tasks.tiny import add_one

import runners


def by_executor_chunksize_one(n: int, workers: int) -> float:
    began = time.perf_counter()
    with ProcessPoolExecutor(workers) as executor:
        total = sum(executor.map(add_one, range(n)))
    assert total == n * (n + 1) // 2
    return time.perf_counter() - began


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=list(PROCESS_BACKENDS))
    options = parser.parse_args()
    n = 100_000 if options.quick else 1_000_000
    w = options.workers
    wait_for_quiet(options.max_load)

    serial = min(runners.run("tiny", params={"n": n}).timings.compute for _ in range(options.repeat))
    executor_n = n // 10
    executor = by_executor_chunksize_one(executor_n, w) * (n / executor_n)
    rows = [["serial", serial, "", "", 1.0, "", ""]]
    for backend in options.backends:
        repeat = 1 if backend in ("ray", "dask") else options.repeat  # their start-up takes seconds
        runs = [runners.run("tiny", backend=backend, workers=w, params={"n": n}) for _ in range(repeat)]
        record = min(runs, key=lambda r: r.timings.compute)
        assert record.check.ok
        compute = record.timings.compute
        rows.append([backend, compute, record.timings.startup, record.batches, compute / serial,
                     verdict(compute <= 3 * serial), f"{executor / record.timings.total:.0f}x"])
        print(f"  {backend}: {compute:.3f} s", flush=True)
    print(f"tiny n={n:,}, {w} workers; ProcessPoolExecutor.map chunksize=1: {executor:.1f} s for {n:,} "
          f"(measured on {executor_n:,}, scaled x{n // executor_n})")
    print(table(["backend", "compute s", "startup s", "batches", "vs serial", "<= 3x",
                 "faster than PPE.map cs=1 (total, >= 50x)"], rows))

    rows = []
    pi_items = 40 if options.quick else 400
    pi = {"samples": pi_items * 20_000, "item_samples": 20_000}  # ~5 ms items
    workloads = {"tiny": ({"n": n}, n), "pi": (pi, pi_items)}
    for backend in ("multiprocessing", "futures", "joblib", "mpi"):
        if backend not in options.backends:
            continue
        for task, (params, count) in workloads.items():
            rule = max(1, count // (w * 4))
            auto, fixed = [], []
            for _ in range(options.repeat):
                auto.append(runners.run(task, backend=backend, workers=w, params=params).timings.compute)
                fixed.append(runners.run(task, backend=backend, workers=w, params=params,
                                         chunksize=rule).timings.compute)
            ratio = min(auto) / min(fixed)
            rows.append([backend, task, count, rule, min(auto), min(fixed), ratio, verdict(ratio <= 1.10)])
            print(f"  {backend} {task}: auto {min(auto):.3f} s, rule {min(fixed):.3f} s", flush=True)
    print("automatic batching vs chunksize = len // (workers * 4), compute phase, best of", options.repeat)
    print(table(["backend", "task", "items", "rule chunksize", "auto s", "rule s", "auto/rule", "<= 1.10"],
                rows))


if __name__ == "__main__":
    main()
