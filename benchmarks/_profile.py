"""The profiles behind benchmarks/README.md "Where the time goes" (issue 17).

    python benchmarks/_profile.py parts MODE N     # one layer of the serial path, for callgrind
    python benchmarks/_profile.py timeline [ROUNDS] # a short job on runners vs Pool.map, phase by phase
    python benchmarks/_profile.py sizing REV [ROUNDS] # this Batcher's sizing against REV's, paired
    python benchmarks/_profile.py restore [ROUNDS]  # the driver's CPU after a run: quiet BLAS set or not

`parts` runs tiny's `x + 1` over N items through one more layer of runners' serial path per MODE:
`map` (sum(list(map(f, items))), the plain loop), `batch` (runners.backend.run_batch, then sum),
`engine` (runners.run, serial). Under
`valgrind --tool=callgrind`, (instructions at N - instructions at 0) / N is what an item costs there.
`timeline` prints, for primes 100,000..200,000 on 2 workers, Pool.map's create / map / stop and
runners' plan / start-up / compute / shut-down with the time (from the first batch handed over) and
size of every batch that came back.
`sizing` runs primes 100k, tiny 1M, pi 16 x 500,000 and primes 100,000..700,000 (~1 s of work: the
last batches' balance shows) on 2 workers: Pool.map, and runners multiprocessing and futures once with
this tree's `Batcher.next_size` and once with the one at git revision REV (swapped in for the call,
in this process), in shuffled rounds with the headroom of each; it prints medians and the paired
ratios to Pool.map and of this tree's sizing to REV's.
`restore` runs pi 16 x 500,000 on 2 workers: list(map), Pool.map, and runners multiprocessing and
futures once as they are and once with threadpoolctl's plain `set_num_threads` swapped in for the
BLAS limit and its restore, in shuffled rounds; per call it prints the medians of the driver's CPU
(all its threads), the reaped workers' CPU, and the driver's CPU in the 0.3 s after the call.
"""

from __future__ import annotations

import multiprocessing
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

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


def sizing(revision: str, rounds: int) -> None:
    import peers
    from _common import headroom, table

    import runners._batcher as batcher

    source = subprocess.run(["git", "show", f"{revision}:src/runners/_batcher.py"], check=True, text=True,
                            capture_output=True, cwd=Path(__file__).parent).stdout
    source = source.replace("from ._backend", "from runners._backend")
    before: dict = {}
    exec(compile(source, f"{revision}:src/runners/_batcher.py", "exec"), before)
    # The whole class's behaviour is swapped (its methods, which read its module's constants), not its
    # identity: the engine makes its Batcher from the class it imported.
    ours, theirs = dict(vars(batcher.Batcher)), dict(vars(before["Batcher"]))
    methods = [name for name, value in theirs.items() if callable(value) or isinstance(value, property)]

    def use(policy: dict) -> None:
        for name in methods:
            if name in policy:
                setattr(batcher.Batcher, name, policy[name])
            else:
                delattr(batcher.Batcher, name)

    def sized_by(policy: dict, backend: str):
        def call(w):
            use(policy)
            try:
                return peers.through_runners(backend)(w)
            finally:
                use(ours)
        return call

    contenders = {"Pool.map": peers.pool_map}
    for backend in ("multiprocessing", "futures"):
        contenders[f"{backend}, {revision}"] = sized_by(theirs, backend)
        contenders[f"{backend}, this tree"] = sized_by(ours, backend)
    workloads = [peers.Workload(name, runners.load_task(task), params) for name, task, params in [
        ("primes", "primes", {"start": 100_000, "stop": 200_000}), ("tiny", "tiny", {"n": 1_000_000}),
        ("pi", "pi", {"samples": 16 * 500_000, "item_samples": 500_000}),
        ("primes 1 s", "primes", {"start": 100_000, "stop": 700_000})]]
    peers.warm_up(["r-multiprocessing", "r-futures"])
    reference = {w.name: peers.plain(w) for w in workloads}
    shuffler = random.Random(17)
    wall: dict[tuple[str, str], list[float]] = {}
    rooms: dict[str, list[float]] = {}
    for _ in range(rounds):
        for w in shuffler.sample(workloads, len(workloads)):
            rooms.setdefault(w.name, []).append(headroom())
            for name in shuffler.sample(list(contenders), len(contenders)):
                began = time.perf_counter()
                result = contenders[name](w)
                wall.setdefault((w.name, name), []).append(time.perf_counter() - began)
                if result != reference[w.name]:
                    raise SystemExit(f"{name} on {w.name}: {result!r}, list(map) gave {reference[w.name]!r}")

    def ratio(these: list[float], those: list[float]) -> float:  # the median of the paired ratios
        return statistics.median(a / b for a, b in zip(these, those, strict=True))

    for w in workloads:
        times = {name: wall[w.name, name] for name in contenders}
        print(f"\n{w.name} {w.raw}, 2 workers, {rounds} rounds, headroom per round "
              + " ".join(f"{h:.2f}" for h in rooms[w.name]))
        rows = [[name, statistics.median(own), ratio(own, times["Pool.map"]),
                 ratio(own, times[name.replace("this tree", revision)]) if "this tree" in name else ""]
                for name, own in times.items()]
        print(table(["contender", "median s", "median x Pool.map", f"median x {revision}'s sizing"], rows))


def restore(rounds: int) -> None:
    import resource

    import peers
    from _common import table

    import runners._threadpools as threadpools

    quiet = threadpools._set_threads

    def loud(runtime, threads: int) -> None:  # what the driver did before: restarts a stopped pool
        runtime.set_num_threads(threads)

    def setting(how, backend: str):
        def call(w):
            threadpools._set_threads = how
            try:
                return peers.through_runners(backend)(w)
            finally:
                threadpools._set_threads = quiet
        return call

    def cpu() -> tuple[float, float]:
        own, reaped = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime, reaped.ru_utime + reaped.ru_stime

    contenders = {"list(map)": peers.plain, "Pool.map": peers.pool_map}
    for backend in ("multiprocessing", "futures"):
        contenders[f"{backend}, quiet set"] = setting(quiet, backend)
        contenders[f"{backend}, plain set"] = setting(loud, backend)
    w = peers.Workload("pi", runners.load_task("pi"), {"samples": 16 * 500_000, "item_samples": 500_000})
    peers.warm_up(["r-multiprocessing", "r-futures"])
    shuffler = random.Random(17)
    seen: dict[str, list[tuple[float, float, float]]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name in shuffler.sample(list(contenders), len(contenders)):
            own, reaped = cpu()
            contenders[name](w)
            own_after, reaped_after = cpu()
            time.sleep(0.3)
            seen[name].append((own_after - own, reaped_after - reaped, cpu()[0] - own_after))
    print(table(["contender", "driver CPU s", "workers CPU s", "driver CPU s in the 0.3 s after"],
                [[name, *(statistics.median(x[i] for x in runs) for i in range(3))]
                 for name, runs in seen.items()]))


if __name__ == "__main__":
    if sys.argv[1:2] == ["parts"]:
        parts(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1:2] == ["timeline"]:
        timeline(int(sys.argv[2]) if len(sys.argv) > 2 else 3)
    elif sys.argv[1:2] == ["sizing"] and len(sys.argv) > 2:
        sizing(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 7)
    elif sys.argv[1:2] == ["restore"]:
        restore(int(sys.argv[2]) if len(sys.argv) > 2 else 7)
    else:
        raise SystemExit(__doc__)
