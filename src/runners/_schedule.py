"""The order of a batch's runs: windows of back-ends started together, and shuffled rounds inside them.

A speed-up divides one run's time by another's, so the two must be taken close together: this shared
machine's speed drifts by tens of percent over minutes. So an experiment's cells do not run one after
another; they run in rounds: each round runs every cell of a window once, in a shuffled order, and the
next round starts only after it. A window is the set of back-ends that are started together for it.
Back-ends that cost nothing while idle (threads, process pools) share one window; a distributed one
(Ray, Dask, MPI) keeps schedulers, heartbeats or polling ranks busy even when idle, so it gets a window
of its own, with the baseline re-run in it. Every ratio is then taken from a pair of runs in the same
window, in the same or the next round.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Collection
from dataclasses import dataclass, field

from ._evidence import BASELINE
from ._matrix import COLD, SHARED, Cell, Matrix

ORDER = ("runs are ordered in rounds: each round runs every cell of a window once, in a shuffled order; "
         "distributed back-ends (busy even when idle) get a window of their own with the serial baseline "
         "re-run beside them; each speed-up is the median of ratios between runs of the same window "
         "nearest in time")


@dataclass
class Window:
    """Cells run together, round by round; `rounds[r]` holds repeat r of each cell, shuffled."""

    experiment: str
    name: str
    reuse: bool
    rounds: list[list[tuple[Cell, int]]] = field(default_factory=list)

    @property
    def runs(self) -> list[tuple[Cell, int]]:
        return [run for runs in self.rounds for run in runs]

    def groups(self) -> dict[str, Cell]:
        """One cell per back-end instance the window starts (in first-use order)."""
        return {cell.group: cell for cell, _ in reversed(self.runs)} if self.reuse else {}


def windows(matrix: Matrix, done: Collection[tuple[str, int]] = ()) -> list[Window]:
    """The windows of the runs still to do, in batch order: experiment by experiment, shared first."""
    made: list[Window] = []
    taken = set(done)
    for experiment in matrix.experiments:
        name = experiment["name"]
        cells = [c for c in matrix.cells if c.experiment == name]
        order = sorted(dict.fromkeys(c.window for c in cells), key=lambda w: w != SHARED)
        for window_name in order:
            members = [c for c in cells if c.window == window_name]
            window = Window(name, window_name, window_name != COLD)
            for repeat in range(matrix.repeats[name]):
                runs = [(cell, repeat) for cell in members if (cell.key, repeat) not in done]
                runs += _baselines_again(members, runs, taken, matrix.repeats[name])
                random.Random(f"{matrix.seed}/{name}/{window_name}/{repeat}").shuffle(runs)
                if runs:
                    window.rounds.append(runs)
            if window.rounds:
                made.append(window)
    return made


def _baselines_again(members: list[Cell], runs: list[tuple[Cell, int]], taken: set[tuple[str, int]],
                     repeats: int) -> list[tuple[Cell, int]]:
    """A resumed round whose baseline run is done (minutes or days ago) runs the baseline once more, as
    an extra repeat numbered past `repeats`, so that the resumed runs have a partner beside them."""
    if not runs or any(cell.backend == BASELINE for cell, _ in runs):
        return []
    again = []
    for cell in members:
        if cell.backend == BASELINE:
            extra = next(n for n in itertools.count(repeats) if (cell.key, n) not in taken)
            taken.add((cell.key, extra))
            again.append((cell, extra))
    return again


__all__ = ["ORDER", "Window", "windows"]
