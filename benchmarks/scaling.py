"""Scaling: Monte Carlo pi (>= 10 s serially) on 2 workers, efficiency per back-end, side by side.

    .venv/bin/python benchmarks/scaling.py [--quick] [--rounds 5] [--workers 2]
        [--backends multiprocessing mpi mpi:scheme=master-worker ray ...]

Issue 17's target 4, measured its way. Each round measures the machine's 2-process headroom, then
runs serial and every back-end once, in a shuffled order, on the same job. A back-end is started for
its run and stopped after it, so that no other back-end's daemons idle beside it (Ray's, Dask's, MPI's
ranks all wake now and then): its start-up and one small warm-up run (Ray and loky start workers on
first use) are printed beside, not counted. Per run it takes the engine's compute phase (first batch
out to last result in) and the CPU seconds that the whole process tree used meanwhile: this process
and every descendant alive at either end of the run (psutil), which counts Ray's GCS and raylet,
Dask's scheduler, nannies and workers, and mpiexec, hydra and the ranks, not only the workers.

Per back-end: the median compute, the median of the rounds' speed-up (serial compute / its compute),
the median of the rounds' efficiency (that speed-up / the round's headroom), and the median of the
rounds' CPU ratio (its CPU seconds / serial's). Targets: efficiency >= 0.95 (multiprocessing, futures,
joblib, mpi) or >= 0.90 (ray, dask); CPU at most 1.05x serial's. A back-end given as NAME:KEY=VALUE
runs with that option (`mpi:scheme=master-worker`).
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

import psutil
from _common import PROCESS_BACKENDS, arguments, headroom, table, verdict, wait_for_quiet

import runners

EFFICIENCY = {"ray": 0.90, "dask": 0.90}  # the others: 0.95
CPU_RATIO = 1.05


def tree_cpu() -> dict[int, float]:
    """CPU seconds used so far by this process and each of its descendants, by PID."""
    used = {}
    me = psutil.Process()
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
            used[process.pid] = times.user + times.system
        except psutil.Error:  # gone meanwhile
            pass
    return used


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """What the tree used between two `tree_cpu` readings (a process that started meanwhile: all of it)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


class Contender:
    """One back-end (with its options) and the job planned on it."""

    def __init__(self, spec: str, workers: int, params: dict) -> None:
        name, _, option = spec.partition(":")
        options: dict[str, Any] = {}
        if option:
            key, _, value = option.partition("=")
            options[key] = value
        self.family = name
        self.plan = runners.plan(runners.Job(task="pi", backend=name, options=options, workers=workers,
                                             params=params))
        self.warm_up = runners.plan(runners.Job(task="pi", backend=name, options=options, workers=workers,
                                                params={**params, "samples": 4 * workers,
                                                        "item_samples": 1}))
        self.startups: list[float] = []

    def run(self) -> tuple[float, float, Any]:
        """Start, warm up, then (compute s, CPU s of the process tree, result) of one run; stop."""
        backend = self.plan.make_backend()
        began = time.perf_counter()
        with backend:
            runners.run_on(backend, self.warm_up)
            self.startups.append(time.perf_counter() - began)
            before = tree_cpu()
            record = runners.run_on(backend, self.plan)
            used = cpu_between(before, tree_cpu())
        assert record.check.ok, record.check.detail
        return record.timings.compute, used, record.result


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backends", nargs="+", default=list(PROCESS_BACKENDS))
    parser.add_argument("--seed", type=int, default=17, help="for the shuffled orders")
    options = parser.parse_args()
    params = {"samples": 4_000_000 if options.quick else 70_000_000}  # >= 10 s serially here
    wait_for_quiet(options.max_load)
    contenders = {"serial": Contender("serial", 1, params)}
    contenders.update({spec: Contender(spec, options.workers, params) for spec in options.backends})
    measure(contenders, options.rounds, options.seed, options.workers, params)


def measure(contenders: dict[str, Contender], rounds: int, seed: int, workers: int, params: dict) -> None:
    shuffler = random.Random(seed)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    rooms = []
    truth = None
    for r in range(rounds):
        rooms.append(headroom())
        for name in shuffler.sample(list(contenders), len(contenders)):
            compute, cpu, result = contenders[name].run()
            truth = result if truth is None else truth
            assert result == truth, f"{name}: {result} differs from {truth}"  # seeded: every back-end alike
            runs[name].append((compute, cpu))
        print(f"  round {r + 1} (headroom {rooms[-1]:.2f}): "
              + ", ".join(f"{name} {runs[name][-1][0]:.2f} s" for name in contenders), flush=True)
    serial = runs.pop("serial")
    rows = []
    for name, got in runs.items():
        speedups = [s[0] / g[0] for s, g in zip(serial, got, strict=True)]
        efficiency = statistics.median(x / room for x, room in zip(speedups, rooms, strict=True))
        cpu_ratio = statistics.median(g[1] / s[1] for s, g in zip(serial, got, strict=True))
        least = EFFICIENCY.get(contenders[name].family, 0.95)
        rows.append([name, statistics.median(contenders[name].startups), statistics.median(g[0] for g in got),
                     statistics.median(speedups), efficiency, least, verdict(efficiency >= least),
                     statistics.median(g[1] for g in got), cpu_ratio, verdict(cpu_ratio <= CPU_RATIO)])
    print(f"pi samples={params['samples']:,}, {workers} workers, {rounds} shuffled rounds; serial compute "
          f"{statistics.median(s[0] for s in serial):.2f} s (median; {min(s[0] for s in serial):.2f}-"
          f"{max(s[0] for s in serial):.2f}), {statistics.median(s[1] for s in serial):.2f} CPU s; "
          f"headroom per round {' '.join(f'{room:.2f}' for room in rooms)}")
    print(table(["back-end", "start-up s (median)", "compute s", "speed-up", "speed-up / headroom", "target",
                 "met", "CPU s", "CPU / serial", "<= 1.05"], rows))


if __name__ == "__main__":
    main()
