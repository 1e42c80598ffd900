"""runners.Executor against the stdlib's pools, the whole call (pool start-up included), 2 workers.

    .venv/bin/python benchmarks/executor.py [--quick] [--rounds 5] [--backends futures multiprocessing]

Contenders, each once per round in a shuffled order, the machine's 2-process headroom measured before
each round: `ProcessPoolExecutor.map` with the rule-of-thumb chunksize (len // (workers * 4)),
`multiprocessing.Pool.map` (its own default chunksize), and `runners.Executor(backend).map` with
automatic batching. Workloads: pi (16 items of 500,000 samples, the task's own item function) and
1,000,000 tiny items (x + 1). Printed: the median of each, and the median over rounds of each
contender's time / the better stdlib pool's time in the same round (target: <= 1.05). Then the
cost of `submit` per call (10,000 calls of x + 1, each awaited at the end) beside
`ProcessPoolExecutor.submit`'s.
"""

from __future__ import annotations

import multiprocessing
import random
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from _common import arguments, headroom, machine, table
from runners_tasks.pi import count_inside
from runners_tasks.tiny import add_one

import runners

WORKERS = 2


def workloads(quick: bool) -> dict[str, tuple[Callable, list]]:
    """Each task's own items (its split) for its own item function."""
    pi, samples = runners.load_task("pi"), 100_000 if quick else 500_000
    pi_items = list(pi.split(pi.params(samples=16 * samples, item_samples=samples), runners.DEFAULT_SEED))
    tiny = list(range(100_000 if quick else 1_000_000))
    return {f"pi 16 x {samples:,}": (count_inside, pi_items), f"tiny {len(tiny):,}": (add_one, tiny)}


def ppe_map(fn: Callable, items: list) -> list:
    with ProcessPoolExecutor(WORKERS) as pool:
        return list(pool.map(fn, items, chunksize=max(1, len(items) // (WORKERS * 4))))


def pool_map(fn: Callable, items: list) -> list:
    with multiprocessing.Pool(WORKERS) as pool:
        return pool.map(fn, items)


def executor_map(backend: str) -> Callable[[Callable, list], list]:
    def run(fn: Callable, items: list) -> list:
        with runners.Executor(backend, workers=WORKERS) as ex:
            return list(ex.map(fn, items))

    return run


def submit_each(make: Callable, n: int) -> float:
    """Seconds per call of `n` submits of x + 1, the pool started before the clock."""
    with make() as pool:
        pool.submit(add_one, 0).result()  # the workers are up
        began = time.perf_counter()
        futures = [pool.submit(add_one, i) for i in range(n)]
        assert sum(f.result() for f in futures) == n * (n + 1) // 2
        return (time.perf_counter() - began) / n


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backends", nargs="+", default=["futures", "multiprocessing"])
    options = parser.parse_args()
    contenders = {"ProcessPoolExecutor.map": ppe_map, "Pool.map": pool_map}
    contenders |= {f"Executor({b!r}).map": executor_map(b) for b in options.backends}
    print(f"# {machine()}; {options.rounds} rounds, shuffled; whole calls on {WORKERS} workers")
    for name, (fn, items) in workloads(options.quick).items():
        expected = list(map(fn, items))
        times: dict[str, list[float]] = {c: [] for c in contenders}
        ratios: dict[str, list[float]] = {c: [] for c in contenders}
        rooms = []
        for _ in range(options.rounds):
            rooms.append(headroom())
            order = list(contenders)
            random.shuffle(order)
            took = {}
            for contender in order:
                began = time.perf_counter()
                assert contenders[contender](fn, items) == expected, contender
                took[contender] = time.perf_counter() - began
                times[contender].append(took[contender])
            best_pool = min(took["ProcessPoolExecutor.map"], took["Pool.map"])
            for contender in contenders:
                ratios[contender].append(took[contender] / best_pool)
        print(f"\n## {name}: headroom per round {', '.join(f'{r:.2f}' for r in rooms)}\n")
        print(table(["contender", "median s", "median ratio to the better stdlib pool", "target"],
                    [[c, statistics.median(times[c]), statistics.median(ratios[c]),
                      "<= 1.05" if c.startswith("Executor") else ""] for c in contenders]))
    n = 2_000 if options.quick else 10_000
    rows = [["ProcessPoolExecutor.submit", submit_each(lambda: ProcessPoolExecutor(WORKERS), n) * 1e6]]
    for backend in options.backends:
        per_call = submit_each(lambda b=backend: runners.Executor(b, workers=WORKERS), n)
        rows.append([f"Executor({backend!r}).submit", per_call * 1e6])
    print(f"\n## submit, one call each ({n:,} calls of x + 1, workers started before the clock)\n")
    print(table(["contender", "microseconds per call"], rows))


if __name__ == "__main__":
    main()
