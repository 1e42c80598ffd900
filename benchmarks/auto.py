"""`--backend auto` against the best of serial and its parallel back-end on each benchmark workload.

    .venv/bin/python benchmarks/auto.py [--quick] [--repeat 3] [--parallel futures]

Wall time of the whole `runners.run` (start-up and shutdown included: deciding whether they are
worth paying is auto's job), best of --repeat, the three back-ends alternating in an order that
turns each round. Target: auto within 1.2x of the better of serial and parallel on every workload.
"""

from __future__ import annotations

import time

from _common import arguments, table, verdict, wait_for_quiet

import runners


def workloads(quick: bool) -> dict[str, tuple[str, dict]]:
    return {
        "pi scaling": ("pi", {"samples": 4_000_000 if quick else 70_000_000}),
        "pi overhead": ("pi", {"samples": 2_000_000 if quick else 10_000_000, "item_samples": 100_000}),
        "pi ~5 ms items": ("pi", {"samples": 800_000 if quick else 8_000_000, "item_samples": 20_000}),
        "pi short": ("pi", {"samples": 200_000, "item_samples": 20_000}),
        "tiny 1M": ("tiny", {"n": 100_000 if quick else 1_000_000}),
        "tiny 1k": ("tiny", {"n": 1_000}),
        "bigarray": ("bigarray", {"megabytes": 50 if quick else 500, "items": 8}),
        "primes": ("primes", {}),
    }


def wall(task: str, params: dict, backend: str, options: dict) -> tuple[float, runners.RunRecord]:
    began = time.perf_counter()
    record = runners.run(task, backend=backend, workers=2, params=params, options=options)
    return time.perf_counter() - began, record


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--parallel", default="futures")
    parser.add_argument("--only", nargs="+", help="run only these workloads (labels as printed)")
    options = parser.parse_args()
    wait_for_quiet(options.max_load)
    rows = []
    for label, (task, params) in workloads(options.quick).items():
        if options.only and label not in options.only:
            continue
        times: dict[str, list[float]] = {"serial": [], options.parallel: [], "auto": []}
        chose = set()
        repeat = 1 if label == "pi scaling" and not options.quick else options.repeat
        for turn in range(repeat):
            # The order turns each round: a run that follows a parallel one pays for its fork (the
            # driver's pages are copy-on-write until touched again: ~0.5 ms on 1,000 tiny items).
            order = list(times)[turn % 3:] + list(times)[:turn % 3]
            for backend in order:
                extra = {"parallel": options.parallel} if backend == "auto" else {}
                seconds, record = wall(task, params, backend, extra)
                assert record.check.ok, (label, backend, record.check)
                times[backend].append(seconds)
                if backend == "auto":
                    chose.add(record.extra["auto"]["choice"])
        best = min(min(times["serial"]), min(times[options.parallel]))
        ratio = min(times["auto"]) / best
        rows.append([label, min(times["serial"]), min(times[options.parallel]), min(times["auto"]),
                     "/".join(sorted(chose)), ratio, verdict(ratio <= 1.2)])
        best_of = [(k, round(min(v), 3)) for k, v in times.items()]
        print(f"  {label}: {best_of} auto chose {chose}", flush=True)
    print(f"wall seconds, 2 workers, best of {options.repeat}; parallel = {options.parallel}")
    print(table(["workload", "serial s", f"{options.parallel} s", "auto s", "auto chose", "auto / best",
                 "<= 1.2"], rows))


if __name__ == "__main__":
    main()
