"""The mpi back-end of this tree against another tree's, and raw mpi4py, side by side.

    git worktree add /tmp/before REV
    .venv/bin/python benchmarks/mpi_trees.py /tmp/before --task pi --rounds 16

A change to the mpi back-end (`plugins/runners_mpi`, `src/runners`) is measured side by side: every
round runs `runners.run(task, backend="mpi", workers=2)` with this tree's code and with the other
tree's, each in a Python of its own whose `sys.path` starts with that tree's `src` and `plugins` (the
driver's end and the job's ranks both: the ranks get the driver's `sys.path`), timed there around the
call with the back-end's plugin and the task already imported; and the hand-written scatter/gather
(`_mpi_by_hand.py`), a whole mpiexec job. They run in a shuffled order after measuring the 2-process
headroom. Printed: each round's wall and compute seconds, then medians and the medians of the paired
ratios (this tree / other tree, and each / raw mpi4py), for the whole call and for the compute phase
(raw mpi4py's: from a barrier after start-up, with the task's module imported, where runners' ranks
import it in their first batch: compare whole calls with raw mpi4py).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import arguments, headroom, wait_for_quiet
from peers import WORKERS, WORKLOADS, mpi_by_hand

HERE = Path(__file__).resolve().parent.parent  # this tree


# Run in a fresh Python with a tree's code first on sys.path: prints [wall, compute] of one call.
ONE_CALL = """
import json, sys, time
import runners
task, params = sys.argv[1], json.loads(sys.argv[2])
runners.load_backend("mpi"), runners.load_task(task)  # imported before the clock, as in a warm driver
began = time.perf_counter()
record = runners.run(task, backend="mpi", workers=int(sys.argv[3]), params=params)
wall = time.perf_counter() - began
assert record.check.ok, record.check.detail
print(json.dumps([wall, record.timings.compute]))
"""


def through_runners(task: str, params: dict[str, Any], tree: Path) -> tuple[float, float]:
    """(wall, compute) seconds of one call with `tree`'s code, driver and ranks."""
    path = [str(tree / "src"), str(tree / "plugins"), *(p for p in sys.path if p)]
    done = subprocess.run([sys.executable, "-c", ONE_CALL, task, json.dumps(params), str(WORKERS)],
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(path)},
                          capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: runners.run failed (exit {done.returncode}):\n{done.stderr}")
    wall, compute = json.loads(done.stdout.splitlines()[-1])
    return wall, compute


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
    contenders = {"this tree": lambda: through_runners(task, params, HERE),
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
