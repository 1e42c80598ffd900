"""Where a run's time goes, batch by batch: automatic sizing against the rule of thumb on one back-end.

    .venv/bin/python benchmarks/batch_trace.py [--backend mpi] [--task tiny] [--runs 3]

For each batch: its size, when the engine handed it over and got its result back (ms since the run
began), its compute seconds in the worker and the pid that ran it. For a back-end that runs batches
in rounds (`runs_in_rounds`: mpi's spmd, one batch per rank, in order; or `--rounds N`), batches are
grouped into those rounds: each round's items, its largest and smallest compute, when its last result
came back and how long after the round before; automatic sizing is then also shown as it would be
for a pool (`runs_in_rounds` off). The last run of each side is printed (the first ones warm up).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from _common import arguments

import runners
from runners import _ordered  # the engine's settle step, wrapped here to watch it: a benchmark only


def traced(backend: Any, the_plan: runners.Plan) -> tuple[float, list[tuple]]:
    rows: list[tuple] = []
    began = time.perf_counter()
    settle = _ordered.OrderedRun._settle

    def watch(self: _ordered.OrderedRun, result: Any, retry: list) -> None:
        batch, handed = self.handed[result.batch_id]
        rows.append((batch.id, len(batch.items), handed - began, time.perf_counter() - began,
                     result.seconds, result.pid))
        settle(self, result, retry)

    _ordered.OrderedRun._settle = watch
    try:
        record = runners.run_on(backend, the_plan)
    finally:
        _ordered.OrderedRun._settle = settle
    assert record.check.ok
    return record.timings.compute, sorted(rows)


def show(label: str, compute: float, rows: list[tuple], per_round: int) -> None:
    print(f"\n{label}: compute {compute * 1000:.1f} ms, {len(rows)} batches")
    print("  id   items  handed ms  back ms  work ms  pid")
    for batch_id, size, handed, back, seconds, pid in rows:
        print(f"  {batch_id:3d} {size:7d} {handed * 1000:9.1f} {back * 1000:8.1f} {seconds * 1000:8.1f}"
              f"  {pid}")
    if not per_round:
        return
    print(f"  rounds of {per_round}: round, items, work ms (largest, smallest), last result back ms, "
          "since the round before ms")
    last = 0.0
    for first in range(0, len(rows), per_round):
        round_ = rows[first:first + per_round]
        work = [r[4] * 1000 for r in round_]
        ended = max(r[3] for r in round_) * 1000
        print(f"  {first // per_round:3d} {sum(r[1] for r in round_):7d}  {max(work):6.1f} {min(work):6.1f}"
              f"  {ended:7.1f} {ended - last:7.1f}")
        last = ended


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--backend", default="mpi")
    parser.add_argument("--task", default="tiny", choices=["tiny", "pi"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=None, help="group batches N at a time (mpi: workers)")
    options = parser.parse_args()
    w = options.workers
    params, count = ({"n": 1_000_000}, 1_000_000) if options.task == "tiny" else (
        {"samples": 400 * 20_000, "item_samples": 20_000}, 400)
    job = runners.Job(task=options.task, backend=options.backend, workers=w, params=params)
    auto = runners.plan(job)
    rule = runners.plan(dataclasses.replace(job, chunksize=max(1, count // (w * 4))))
    per_round = options.rounds if options.rounds is not None else (w if options.backend == "mpi" else 0)
    with auto.make_backend() as started:
        runners.run_on(started, auto)  # warms the workers
        in_rounds = started.runs_in_rounds
        sides = [("auto", auto, in_rounds), ("rule", rule, in_rounds)]
        if in_rounds:  # and as a pool's batches would be sized
            sides.insert(1, ("auto, sized as for a pool", auto, False))
        for label, the_plan, rounds in sides:
            started.runs_in_rounds = rounds
            for _ in range(options.runs):
                compute, rows = traced(started, the_plan)
            show(f"{options.backend} {options.task} {label}", compute, rows, per_round)


if __name__ == "__main__":
    main()
