"""Running a matrix (`runners batch`): windows of back-ends, rounds of runs, the headroom beside each,
records as runs end.

Each run is a run of the same engine as `runners exec` (`plan` then `run_on`). A window's back-ends are
started once and reused by every run of the window, their start-up recorded apart; an experiment with
`reuse: false` starts one per run, as a user timing a cold pool would. Before each round the 2-process
headroom is measured and stored with the round's records, so the report can tell a quiet machine from
a busy one. Records go to OUT/results.jsonl as each run ends (`_results`): a rerun skips what is done,
`--fresh` starts over, and one matrix run at a time may write to a folder. An experiment with `memory: true`
(whose back-ends each have a window of their own) also records, per run, the peak memory of this
process and the processes it started since the window began (its back-end's), beyond what this
process held then: helpers started before (the headroom's spinners) are not the back-end's.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._backend import Backend
from ._engine import plan, run, run_on
from ._errors import ConfigError, RunnersError
from ._matrix import Cell, Matrix, load_matrix
from ._memory import KIND, PeakMemory, tree_mb, tree_pids
from ._results import RESULTS, FolderLock, ResultsStore, StoreFull, read_results
from ._schedule import ORDER, Window, windows
from ._sysinfo import Headroom, system_info

META = "batch.json"
MADE = (RESULTS, META, "report.md", "report.csv", "report.html")  # what --fresh removes, with plots/
PLOTS = "plots"


@dataclass
class MatrixOutcome:
    out: Path
    ran: int = 0
    already: int = 0
    notes: list[str] = field(default_factory=list)
    failed: int = 0  # back-end groups that failed (each has a note); a rerun resumes them


def run_matrix(path: str | Path, out: str | Path | None = None, quick: bool = False,
               dry_run: bool = False, fresh: bool = False, echo: Callable[[str], None] = print,
               show_progress: bool = True) -> MatrixOutcome:
    """Run (or resume) a matrix file (`runners batch`); returns where the results are. Ctrl-C keeps
    finished records."""
    matrix = load_matrix(path, quick, out)
    skipped = [f"skipped {s['backend']} x{s['workers']} in {s['experiment']}: {s['reason']}"
               for s in matrix.skipped]
    if dry_run:
        return _dry_run(matrix, fresh, skipped, echo)
    try:
        matrix.out.mkdir(parents=True, exist_ok=True)
        (matrix.out / RESULTS).touch()  # fail now, not after the first cell ran
    except OSError as exc:
        raise ConfigError(f"output folder {str(matrix.out)!r} cannot be written ({exc.strerror or exc}); "
                          "choose another with --out") from exc
    say = (lambda line: print(line, file=sys.stderr, flush=True)) if show_progress else (lambda line: None)
    with FolderLock(matrix.out):
        if fresh:
            _start_over(matrix.out)
        done = {(r["cell"], r["repeat"]) for r in read_results(matrix.out / RESULTS, repair=True)}
        todo = windows(matrix, done)
        outcome = MatrixOutcome(matrix.out, already=len(done))
        _write_meta(matrix)
        progress = _Progress([c for w in todo for c, _ in w.runs], matrix.repeats, say)
        with ResultsStore(matrix.out / RESULTS) as store, Headroom() as headroom:
            ctx = _Context(matrix, store, headroom, progress, outcome, f"{os.getpid()}-{time.time():.0f}")
            for window in todo:
                _run_window(window, ctx)
        _write_meta(matrix, outcome.notes)
    outcome.notes = skipped + outcome.notes
    return outcome


@dataclass
class _Context:
    matrix: Matrix
    store: ResultsStore
    headroom: Headroom
    progress: _Progress
    outcome: MatrixOutcome
    session: str  # this invocation of the batch: a resumed batch's records carry another


def _run_window(window: Window, ctx: _Context) -> None:
    """Start the window's back-ends, run its rounds (headroom first in each), shut them all down."""
    started: dict[str, tuple[Backend, float]] = {}
    failed: set[str] = set()
    # what a run's memory is counted from: this process, before the window's back-end starts
    memory = None
    if any(cell.memory for cell, _ in window.runs):
        helpers = frozenset(tree_pids()) - {os.getpid()}
        memory = (helpers, tree_mb(exclude=helpers))
    try:
        for group, cell in window.groups().items():
            try:
                started[group] = _start(cell)
            except RunnersError as exc:
                _failed(ctx, window, cell, exc, failed)
        for number, runs in enumerate(window.rounds):
            state = {"window": window.name, "round": number, "headroom": round(ctx.headroom.measure(), 3),
                     "session": ctx.session}
            for cell, repeat in runs:
                if cell.group in failed:
                    ctx.progress.skip()
                else:
                    _run_cell(cell, repeat, window, started, failed, state, ctx, memory)
    finally:
        for backend, _ in started.values():
            _stop(backend)


def _start(cell: Cell) -> tuple[Backend, float]:
    """The cell's back-end, started, and the seconds its start took."""
    backend = plan(cell.job()).make_backend()
    began = time.perf_counter()
    backend.__enter__()
    return backend, time.perf_counter() - began


def _run_cell(cell: Cell, repeat: int, window: Window, started: dict[str, tuple[Backend, float]],
              failed: set[str], state: dict[str, Any], ctx: _Context,
              memory: tuple[frozenset[int], float] | None) -> None:
    """One run of `cell`, recorded; a broken back-end loses its group's runs, not the batch."""
    ctx.progress.start(cell, repeat)
    try:
        record = _one_run(cell, repeat, started, state, ctx, memory)
    except StoreFull:
        raise
    except RunnersError as exc:
        _failed(ctx, window, cell, exc, failed)
        if cell.group in started:
            _stop(started.pop(cell.group)[0])
        return
    ctx.progress.finish(cell, record["wall"])
    ctx.outcome.ran += 1


def _one_run(cell: Cell, repeat: int, started: dict[str, tuple[Backend, float]], state: dict[str, Any],
             ctx: _Context, memory: tuple[frozenset[int], float] | None = None) -> dict[str, Any]:
    began = _now()
    helpers, base = memory or (frozenset(), 0.0)
    with PeakMemory(exclude=helpers) if cell.memory and memory else contextlib.nullcontext() as peak:
        if cell.group in started:
            backend, startup = started[cell.group]
            record = run_on(backend, plan(cell.job())).to_dict()
            record["timings"]["startup"] = startup
            record["wall"] = record["timings"]["compute"]
        else:  # a cold run: start-up and shut-down count
            record = run(cell.job()).to_dict()
            startup = record["timings"]["startup"]
            record["wall"] = record["timings"]["total"]
    if peak is not None:
        record.update(memory_mb=round(max(0.0, peak.mb - base), 1), memory_kind=KIND)
    record.update(state)
    record.update({
        "experiment": cell.experiment, "cell": cell.key, "repeat": repeat, "label": cell.label,
        "chunksize_label": cell.chunk_label, "beside": cell.beside, "profile": ctx.matrix.profile,
        "backend_startup": startup, "cell_params": cell.params, "position": ctx.matrix.cells.index(cell),
        "started_at": began, "finished_at": _now(),
        "sample": {"items": cell.sample["items"], "of": cell.sample["of"]} if cell.sample else None,
    })
    ctx.store.append(record)
    return record


def _failed(ctx: _Context, window: Window, cell: Cell, exc: RunnersError, failed: set[str]) -> None:
    ctx.outcome.notes.append(f"failed {cell.group} in {window.experiment}: {exc}")
    ctx.outcome.failed += 1
    failed.add(cell.group)


def _stop(backend: Backend) -> None:
    backend.__exit__(None, None, None)


def _dry_run(matrix: Matrix, fresh: bool, skipped: list[str], echo: Callable[[str], None]) -> MatrixOutcome:
    """The number of cells and runs, and for each cell every option and parameter that sets it apart."""
    done = set() if fresh else {(r["cell"], r["repeat"]) for r in read_results(matrix.out / RESULTS)}
    todo = windows(matrix, done)
    runs = sum(matrix.repeats[c.experiment] for c in matrix.cells)
    echo(f"{matrix.name} ({matrix.profile} profile): {len(matrix.experiments)} experiments, "
         f"{len(matrix.cells)} cells, {runs} runs, {sum(len(w.runs) for w in todo)} to do in "
         f"{len(todo)} windows; results in {matrix.out}")
    base = {e["name"]: e for e in matrix.experiments}
    for cell in matrix.cells:
        left = sum(1 for w in todo for c, _ in w.runs if c is cell)
        varied = {k: cell.params[k] for k in base[cell.experiment]["varied"]}
        parts = [f"{cell.experiment}: {cell.group}", f"chunksize={cell.chunk_label}"]
        parts += [f"{k}={v}" for k, v in varied.items()]
        if cell.sample:
            parts.append(f"sample {_params(cell.sample['params'])} of {cell.sample['of']:,} items")
        if cell.beside:
            parts.append(f"baseline beside {cell.beside}")
        echo(f"  {', '.join(parts)}: {left}/{matrix.repeats[cell.experiment]} to run")
    for note in skipped:
        echo(note)
    return MatrixOutcome(matrix.out, already=runs - sum(len(w.runs) for w in todo))


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in params.items())


def _start_over(out: Path) -> None:
    """--fresh: remove what earlier batches and reports wrote here (fixed names only), nothing else."""
    for name in MADE:
        (out / name).unlink(missing_ok=True)
    plots = out / PLOTS
    if plots.is_dir():
        for png in plots.glob("*.png"):
            png.unlink()
        if not any(plots.iterdir()):
            plots.rmdir()


def _write_meta(matrix: Matrix, notes: Sequence[str] = ()) -> None:
    meta = {"name": matrix.name, "source": matrix.source, "profile": matrix.profile, "order": ORDER,
            "experiments": matrix.experiments, "skipped": matrix.skipped, "notes": list(notes),
            "system": system_info()}
    write_text(matrix.out / META, json.dumps(meta, indent=2, default=repr) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write a whole file, or fail with one line (a full disk is no reason for a traceback)."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise StoreFull(f"{path}: cannot write ({exc.strerror or exc}); the results recorded so far are "
                        "kept: free some space and run the same command again") from None


class _Progress:
    """One line per run on stderr: which cell and repeat, how far the batch is, and its ETA.

    The ETA adds up, for every run left, the time that cell's last run took, or while it has not run
    yet, the median of its experiment's runs so far (of the whole batch's before that)."""

    def __init__(self, runs: list[Cell], repeats: dict[str, int], say: Callable[[str], None]) -> None:
        self.runs, self.repeats, self.say = runs, repeats, say
        self.number = 0
        self.began = self._run_began = time.monotonic()
        self.seconds: dict[str, float] = {}  # per cell: its latest run's time, start to end
        self.by_experiment: dict[str, list[float]] = {}

    def start(self, cell: Cell, repeat: int) -> None:
        self.number += 1
        self._run_began = time.monotonic()
        what = f"{cell.experiment}: {cell.group}" + (f" beside {cell.beside}" if cell.beside else "")
        if cell.chunk_label != "auto":
            what += f", chunksize {cell.chunk_label}"
        if cell.sample:
            what += f", a sample of {cell.sample['items']:,} items"
        repeats = self.repeats[cell.experiment]
        which = f"repeat {repeat + 1}/{repeats}" if repeat < repeats else "again, beside resumed runs"
        self.say(f"[{self.number}/{len(self.runs)}] {what}, {which}; {_clock(self._run_began - self.began)} "
                 f"elapsed, batch ETA {self._eta()}")

    def finish(self, cell: Cell, wall: float) -> None:
        took = time.monotonic() - self._run_began
        self.seconds[cell.key] = took
        self.by_experiment.setdefault(cell.experiment, []).append(took)

    def skip(self) -> None:
        self.number += 1

    def _eta(self) -> str:
        if not self.seconds:
            return "after the first run"
        everything = statistics.median(self.seconds.values())
        left = 0.0
        for cell in self.runs[self.number - 1:]:
            same = self.by_experiment.get(cell.experiment)
            left += self.seconds.get(cell.key, statistics.median(same) if same else everything)
        return f"~{_clock(left)}"


def _clock(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}:{rest:02d}"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


__all__ = ["META", "MatrixOutcome", "read_results", "run_matrix", "load_matrix", "write_text"]
