"""The mpi back-end's ranks from this tree against another tree's, and raw mpi4py, side by side.

    git worktree add /tmp/before REV
    .venv/bin/python benchmarks/mpi_trees.py /tmp/before --task pi --rounds 16

A change to how the job's ranks work (`plugins/runners_mpi`, `src/runners`) is measured in one
process: every round runs `runners.run(task, backend="mpi", workers=2)` with this tree's ranks and
with the other tree's (its `src` and `plugins` first on the path that the job's ranks get), and the
hand-written scatter/gather (`_mpi_by_hand.py`), in a shuffled order after measuring the 2-process
headroom. The driver's own code is this tree's in both. Printed: each round's wall and compute
seconds, then medians and the medians of the paired ratios (this tree / other tree, and each / raw
mpi4py), for the whole call and for the compute phase (raw mpi4py's: from a barrier after start-up).
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _common import arguments, headroom, wait_for_quiet
from peers import WORKERS, WORKLOADS, mpi_by_hand

import runners


def through_runners(task: str, params: dict[str, Any], tree: Path | None) -> tuple[float, float]:
    """(wall, compute) seconds; the job's ranks run `tree`'s code (None: this tree's)."""
    saved = sys.path[:]
    if tree is not None:  # the job's ranks get this process's sys.path as PYTHONPATH
        sys.path[:0] = [str(tree / "src"), str(tree / "plugins")]
    try:
        began = time.perf_counter()
        record = runners.run(task, backend="mpi", workers=WORKERS, params=params)
        wall = time.perf_counter() - began
    finally:
        sys.path[:] = saved
    assert record.check.ok, record.check.detail
    return wall, record.timings.compute


def by_hand(task: str, params: dict[str, Any]) -> tuple[float, float]:
    began = time.perf_counter()
    seconds = mpi_by_hand(task, params)["seconds"]
    return time.perf_counter() - began, seconds


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("tree", type=Path, help="a checkout of the other revision (git worktree add)")
    parser.add_argument("--task", default="pi", choices=sorted(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=16)
    options = parser.parse_args()
    if not (options.tree / "plugins" / "runners_mpi").is_dir():
        parser.error(f"{options.tree}: not a checkout of runners (no plugins/runners_mpi)")
    wait_for_quiet(options.max_load)
    task, params, quick = WORKLOADS[options.task]  # peers.py's workloads
    params = quick if options.quick else params
    contenders = {"this tree": lambda: through_runners(task, params, None),
                  "other tree": lambda: through_runners(task, params, options.tree),
                  "raw mpi4py": lambda: by_hand(task, params)}
    for run in contenders.values():  # warm-up: files cached, nothing measured
        run()
    seen: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
    for number in range(1, options.rounds + 1):
        room = headroom()
        order = list(contenders)
        random.shuffle(order)
        for name in order:
            seen[name].append(contenders[name]())
        print(f"  round {number} (headroom {room:.2f}): " + ", ".join(
            f"{name} {seen[name][-1][0]:.3f} s ({seen[name][-1][1]:.3f} compute)" for name in order))
    for part, label in ((0, "whole call"), (1, "compute")):
        medians = ", ".join(f"{name} {statistics.median(x[part] for x in seen[name]):.3f} s" for name in seen)
        pairs = (("this tree", "other tree"), ("this tree", "raw mpi4py"), ("other tree", "raw mpi4py"))
        ratios = ", ".join(f"{a} / {b} {paired(seen[a], seen[b], part):.3f}" for a, b in pairs)
        print(f"{options.task} {label}: {medians}; paired: {ratios}")


def paired(a: list[tuple[float, float]], b: list[tuple[float, float]], part: int) -> float:
    """The median of round-by-round ratios a / b of the wall (part 0) or compute (1) seconds."""
    return statistics.median(x[part] / y[part] for x, y in zip(a, b, strict=True))

if __name__ == "__main__":
    main()
