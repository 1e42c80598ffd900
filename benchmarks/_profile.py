"""The profiles behind benchmarks/README.md "Where the time goes" (issue 17).

    python benchmarks/_profile.py parts MODE N     # one layer of the serial path, for callgrind
    python benchmarks/_profile.py timeline [ROUNDS] # a short job on runners vs Pool.map, phase by phase

`parts` runs tiny's `x + 1` over N items through one more layer of runners' serial path per MODE:
`map` (sum(list(map(f, items))), the plain loop), `batch` (runners.backend.run_batch, then sum),
`engine` (runners.run, serial). Under
`valgrind --tool=callgrind`, (instructions at N - instructions at 0) / N is what an item costs there.
`timeline` prints, for primes 100,000..200,000 on 2 workers, Pool.map's create / map / stop and
runners' plan / start-up / compute / shut-down with the time (from the first batch handed over) and
size of every batch that came back.
"""

from __future__ import annotations

import multiprocessing
import sys
import time

from runners_tasks.primes import is_prime
from runners_tasks.tiny import add_one

import runners
from runners.backend import Batch, run_batch


def parts(mode: str, n: int) -> None:
    if mode == "map":
        sum(list(map(add_one, range(n))))
    elif mode == "batch":
        sum(run_batch(Batch(0, add_one, 0, range(n))).values)
    elif mode == "engine":
        runners.run("tiny", backend="serial", params={"n": n})
    else:
        raise SystemExit(f"mode: expected map, batch or engine, got {mode!r}")


def pool_map() -> dict:
    began = time.perf_counter()
    pool = multiprocessing.Pool(2)
    created = time.perf_counter()
    pool.map(is_prime, range(100_000, 200_000))
    mapped = time.perf_counter()
    pool.terminate()
    pool.join()
    return {"create": created - began, "map": mapped - created, "stop": time.perf_counter() - mapped,
            "total": time.perf_counter() - began}


def through(backend: str) -> dict:
    marks: list[tuple[float, int]] = []
    began = time.perf_counter()
    record = runners.run("primes", backend=backend, workers=2,
                         on_start=lambda n: marks.append((time.perf_counter(), 0)),
                         progress=lambda n: marks.append((time.perf_counter(), n)))
    total = time.perf_counter() - began
    first = marks[0][0]
    return {"plan": first - began - record.timings.startup, "startup": record.timings.startup,
            "compute": record.timings.compute, "shutdown": record.timings.shutdown, "total": total,
            "batches (s, items)": [(round(at - first, 4), n) for at, n in marks[1:]]}


def timeline(rounds: int) -> None:
    for backend in ("multiprocessing", "futures"):
        runners.load_backend(backend)
    for _ in range(rounds):
        for name, fn in (("Pool.map", pool_map), ("multiprocessing", lambda: through("multiprocessing")),
                         ("futures", lambda: through("futures"))):
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in fn().items()}
            print(name, shown, flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["parts"]:
        parts(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1:2] == ["timeline"]:
        timeline(int(sys.argv[2]) if len(sys.argv) > 2 else 3)
    else:
        raise SystemExit(__doc__)
