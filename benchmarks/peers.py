"""Peers: runners against what a user would write instead, whole calls on 2 workers (issue 17).

    .venv/bin/python benchmarks/peers.py [--quick] [--rounds 5] [--only WORKLOAD] [--contenders a,b]

Each contender maps the task's own item function over the task's own items (split, map, combine),
the whole user-visible call timed: pool start-up and shutdown included, every worker process reaped
before the clock stops. Peers: `list(map(f, items))`; `multiprocessing.Pool.map` (its default
chunksize); `ProcessPoolExecutor.map` with the rule-of-thumb chunksize len // (workers * 4);
`joblib.Parallel` defaults (then its reusable loky pool is stopped, as runners' joblib back-end
does); `mpire.WorkerPool.map` defaults; a private Ray (`ray.init`, one task per rule-of-thumb chunk:
one per item would be 10^5-10^6 tasks), a private dask `LocalCluster` (the same chunks), and mpi4py's
textbook scatter/gather under `mpiexec` (benchmarks/_mpi_by_hand.py; the whole mpiexec job timed).
runners: `runners.run(task, backend=..., workers=2)`, which also checks the result.

Rounds: every round runs each workload once, its contenders in a shuffled order, after measuring
the 2-process headroom. Printed: medians of wall seconds, the median of the paired ratios to the best
peer of the same round (and to Pool.map's, issue 17's short-job target, when it runs), speed-up over
list(map) / headroom in the same round, and CPU seconds of the whole call (this process's own plus
those of its reaped children and their reaped descendants, `getrusage`) against list(map)'s. A
process that outlives its call is named (its CPU is then missed). A thread a call leaves running in
this process (a BLAS thread spinning down, a pool's helper) is waited out before the next call
starts, and the CPU it burns meanwhile is the call's (shown apart as "CPU s after"): else it would
land in whatever runs next.
"""

from __future__ import annotations

import json
import random
import resource
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from _common import arguments, headroom, table, wait_for_quiet
from runners_tasks.factorize import DOCUMENT_NUMBERS

import runners

WORKERS = 2
BY_HAND_MPI = Path(__file__).with_name("_mpi_by_hand.py")
WORKLOADS = {  # name: (task, params, quick params)
    "pi": ("pi", {"samples": 16 * 500_000, "item_samples": 500_000},
           {"samples": 16 * 50_000, "item_samples": 50_000}),
    "tiny": ("tiny", {"n": 1_000_000}, {"n": 100_000}),
    "primes": ("primes", {"start": 100_000, "stop": 200_000}, {"start": 100_000, "stop": 110_000}),
    "factorize": ("factorize", {"numbers": DOCUMENT_NUMBERS},
                  {"numbers": [10**10 + k for k in (1, 3, 7, 9)]}),
}
BACKENDS = ("serial", "multiprocessing", "futures", "joblib", "ray", "dask", "mpi")


@dataclass(frozen=True)
class Workload:
    name: str
    task: runners.Task
    raw: dict[str, Any]  # params as a user passes them

    @property
    def params(self) -> Any:
        return self.task.params(**self.raw)

    def items(self) -> Any:
        return self.task.split(self.params, runners.DEFAULT_SEED)

    def combine(self, values: Any) -> Any:
        return self.task.combine(iter(values), self.params)


def rule(items: Any) -> int:
    return max(1, len(items) // (WORKERS * 4))


def run_chunk(fn: Callable[[Any], Any], chunk: Any) -> list[Any]:
    return [fn(x) for x in chunk]


def chunks(items: Any) -> list[Any]:
    size = rule(items)
    return [items[i:i + size] for i in range(0, len(items), size)]


def plain(w: Workload) -> Any:
    return w.combine(list(map(w.task.run, w.items())))


def pool_map(w: Workload) -> Any:
    import multiprocessing

    with multiprocessing.Pool(WORKERS) as pool:
        values = pool.map(w.task.run, w.items())
    pool.join()  # the with-block terminates; join reaps
    return w.combine(values)


def executor_map(w: Workload) -> Any:
    from concurrent.futures import ProcessPoolExecutor

    items = w.items()
    with ProcessPoolExecutor(WORKERS) as executor:
        values = list(executor.map(w.task.run, items, chunksize=rule(items)))
    return w.combine(values)


def joblib_parallel(w: Workload) -> Any:
    from joblib import Parallel, delayed
    from joblib.externals.loky import get_reusable_executor

    values = Parallel(n_jobs=WORKERS)(delayed(w.task.run)(x) for x in w.items())
    executor = get_reusable_executor(reuse=True)  # stopped as runners' joblib back-end stops it
    executor.terminate() if hasattr(executor, "terminate") else executor.shutdown(wait=True)
    return w.combine(values)


def mpire_map(w: Workload) -> Any:
    from mpire import WorkerPool

    items = w.items()
    # mpire unpacks a tuple item into arguments (pi's items are tuples): wrap those.
    args = [(x,) for x in items] if isinstance(items[0], tuple) else items
    with WorkerPool(n_jobs=WORKERS) as pool:
        values = pool.map(w.task.run, args, iterable_len=len(items))
    return w.combine(values)


def ray_raw(w: Workload) -> Any:
    import ray

    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(run_chunk)
        parts = ray.get([remote.remote(w.task.run, chunk) for chunk in chunks(w.items())])
    finally:
        ray.shutdown()
    return w.combine(v for part in parts for v in part)


def dask_raw(w: Workload) -> Any:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        parts = client.gather(client.map(run_chunk, [w.task.run] * len(pieces := chunks(w.items())),
                                         pieces, pure=False))
    return w.combine(v for part in parts for v in part)


def mpi_raw(w: Workload) -> Any:
    return mpi_by_hand(w.task.name, w.raw)["result"]


def mpi_by_hand(task: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The textbook scatter/gather of `task`'s items on WORKERS ranks, a whole mpiexec job: what it
    printed, {"seconds": compute from a barrier after start-up, "result": ...}."""
    from runners_mpi import mpiexec_command

    command = mpiexec_command(WORKERS, [str(BY_HAND_MPI), task, json.dumps(raw)])
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(done.stdout)


def through_runners(backend: str) -> Callable[[Workload], Any]:
    def call(w: Workload) -> Any:
        record = runners.run(w.task.name, backend=backend, workers=WORKERS, params=w.raw)
        assert record.check.ok, record.check.detail
        return record.result

    return call


PEERS = {"plain": ("list(map)", plain), "pool": ("Pool.map", pool_map),
         "ppe": ("PPE.map rule-of-thumb", executor_map), "joblib": ("joblib.Parallel", joblib_parallel),
         "mpire": ("mpire", mpire_map), "ray": ("raw Ray", ray_raw), "dask": ("raw Dask", dask_raw),
         "mpi4py": ("raw mpi4py", mpi_raw)}
CONTENDERS = {**PEERS, **{f"r-{b}": (f"runners {b}", through_runners(b)) for b in BACKENDS}}


def cpu_seconds() -> float:
    mine, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime


def leftovers(patience: float = 5.0) -> list[str]:
    """Processes a call left behind (waited for a little: some pools reap in the background), but
    not multiprocessing's resource tracker, which the first pool starts for the life of this process."""
    def left() -> list[psutil.Process]:
        children = []
        for child in psutil.Process().children(recursive=True):
            try:
                if "resource_tracker" not in " ".join(child.cmdline()):
                    children.append(child)
            except psutil.Error:  # gone meanwhile
                pass
        return children

    deadline = time.monotonic() + patience
    while (alive := left()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [f"{p.pid} {p.name()}" for p in alive if p.is_running()]


def own_cpu_seconds() -> float:
    mine = resource.getrusage(resource.RUSAGE_SELF)
    return mine.ru_utime + mine.ru_stime


def settle(window: float = 0.05, patience: float = 2.0) -> float:
    """CPU seconds this process's other threads burn while this one sleeps, until a `window` passes
    in which they burn almost none (at most `patience` seconds)."""
    began, deadline = own_cpu_seconds(), time.monotonic() + patience
    while time.monotonic() < deadline:
        before = own_cpu_seconds()
        time.sleep(window)
        if own_cpu_seconds() - before < 0.05 * window:
            break
    return own_cpu_seconds() - began


def timed(fn: Callable[[Workload], Any], w: Workload) -> tuple[float, float, float, Any]:
    """Wall and CPU seconds of the call, and the CPU its leftover threads burn after it."""
    cpu, began = cpu_seconds(), time.perf_counter()
    result = fn(w)
    wall, used = time.perf_counter() - began, cpu_seconds() - cpu
    return wall, used, settle(), result


def warm_up(names: list[str]) -> None:
    """Import what the contenders use, so that no round pays a library's import (Ray's takes seconds)."""
    for module in ("multiprocessing.pool", "concurrent.futures.process", "joblib", "mpire", "ray",
                   "distributed", "runners_mpi"):
        __import__(module)
    for name in names:
        if name.startswith("r-"):
            runners.load_backend(name[2:])


def median_of(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=list(WORKLOADS), action="append",
                        help="run this workload only (repeat the flag for several)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS),
                        help=f"comma-separated, of: {','.join(CONTENDERS)}")
    parser.add_argument("--seed", type=int, default=17, help="for the shuffled orders")
    options = parser.parse_args()
    names = [n.strip() for n in options.contenders.split(",") if n.strip()]
    if unknown := [n for n in names if n not in CONTENDERS]:
        parser.error(f"--contenders: unknown {', '.join(unknown)}; expected some of {', '.join(CONTENDERS)}")
    workloads = [Workload(name, runners.load_task(task), quick if options.quick else params)
                 for name, (task, params, quick) in WORKLOADS.items() if name in (options.only or WORKLOADS)]
    warm_up(names)
    wait_for_quiet(options.max_load, patience=30 if options.quick else 300)
    reference = {w.name: plain(w) for w in workloads}
    shuffler = random.Random(options.seed)
    # (workload, contender) -> per round: (wall s, cpu s, cpu s after); per (round, workload): headroom
    runs: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    rooms: dict[tuple[int, str], float] = {}
    for r in range(options.rounds):
        for w in shuffler.sample(workloads, len(workloads)):
            rooms[r, w.name] = headroom()
            for name in shuffler.sample(names, len(names)):
                wall, cpu, after, result = timed(CONTENDERS[name][1], w)
                if result != reference[w.name]:
                    raise SystemExit(f"{name} on {w.name}: result {result!r} differs from list(map)'s "
                                     f"{reference[w.name]!r}")
                runs.setdefault((w.name, name), []).append((wall, cpu + after, after))
                if left := leftovers():
                    print(f"  ! {name} on {w.name} left {', '.join(left)} running (their CPU is not counted)")
            print(f"  round {r + 1} {w.name} (headroom {rooms[r, w.name]:.2f}): "
                  + ", ".join(f"{n} {runs[w.name, n][-1][0]:.3f}" for n in names), flush=True)
    report(workloads, names, runs, rooms, options.rounds)


def report(workloads: list[Workload], names: list[str], runs: dict, rooms: dict, rounds: int) -> None:
    peers = [n for n in names if n in PEERS]
    base = "plain" if "plain" in names else "r-serial" if "r-serial" in names else None
    summary: dict[str, list[str]] = {n: [] for n in names}
    best_peers = []
    pooled = "pool" in names  # issue 17's short-job target is a ratio to it
    for w in workloads:
        wall = {n: [s for s, _, _ in runs[w.name, n]] for n in names}
        cpu = {n: [c for _, c, _ in runs[w.name, n]] for n in names}
        after = {n: [a for _, _, a in runs[w.name, n]] for n in names}
        room = [rooms[r, w.name] for r in range(rounds)]
        best = [min((wall[p][r] for p in peers), default=float("nan")) for r in range(rounds)]
        if peers:
            winners = Counter(min(peers, key=lambda p: wall[p][r]) for r in range(rounds))  # noqa: B023
            top, wins = winners.most_common(1)[0]
            best_peers.append(f"{w.name}: {CONTENDERS[top][0]} {median_of(wall[top]):.3f} s "
                              f"(best in {wins} of {rounds} rounds)")
        rows = []
        for n in names:
            ratio = median_of([s / b for s, b in zip(wall[n], best, strict=True)])
            efficiency = cpu_ratio = float("nan")
            if base:
                efficiency = median_of([b / s / h for s, b, h in zip(wall[n], wall[base], room, strict=True)])
                cpu_ratio = median_of([c / b for c, b in zip(cpu[n], cpu[base], strict=True)])
            to_pool = []
            if pooled:
                to_pool = [median_of([s / p for s, p in zip(wall[n], wall["pool"], strict=True)])]
            rows.append([CONTENDERS[n][0], median_of(wall[n]), ratio, *to_pool, efficiency,
                         median_of(cpu[n]), median_of(after[n]), cpu_ratio])
            summary[n].append(f"{ratio:.2f}x ({median_of(wall[n]):.3f} s)")
        shown = len(w.raw["numbers"]) if w.name == "factorize" else w.raw
        print(f"\n{w.name} {shown}, {WORKERS} workers, {rounds} rounds, headroom per round "
              + " ".join(f"{h:.2f}" for h in room))
        print(table(["contender", "median s", "median x best peer", *["median x Pool.map"] * pooled,
                     f"speed-up / headroom (vs {base})", "median CPU s", "of which after the call",
                     f"CPU / {base} CPU"], rows))
    print(f"\nSummary: median of the paired ratios to the round's best peer (median wall s); "
          f"{WORKERS} workers, whole calls, {rounds} rounds")
    print("best peers: " + "; ".join(best_peers))
    print(table(["contender", *[w.name for w in workloads]],
                [[CONTENDERS[n][0], *summary[n]] for n in names]))


if __name__ == "__main__":
    main()
