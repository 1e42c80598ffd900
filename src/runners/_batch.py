"""Batch jobs: a YAML matrix of tasks x params x back-ends x workers x chunksizes x repeats, run and stored.

Each cell is a run of the same engine as `runners exec` (`plan` then `run_on`). A back-end is started once
per (back-end, options, workers) group and reused by every cell of the group, its start-up recorded
apart; an experiment with `reuse: false` starts one per run, as a user timing a cold pool would.
Records go to OUT/results.jsonl, one JSON line per run, flushed and fsynced as each run finishes, so
a rerun skips what is done and drops the torn last line a killed run may leave.
"""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._config import read_yaml, split_backend
from ._engine import DEFAULT_SEED, Job, plan, run, run_on
from ._errors import ConfigError, RunnersError
from ._registry import backend_names, backend_status
from ._sysinfo import system_info
from ._validate import unknown_key_message

RESULTS = "results.jsonl"
META = "batch.json"
BATCH_KEYS = ["name", "out", "repeats", "seed", "quick", "experiments"]
EXPERIMENT_KEYS = ["name", "title", "task", "params", "vary", "backends", "workers", "chunksize",
                   "repeats", "reuse", "run_timeout", "quick", "document"]
QUICK_KEYS = ["params", "vary", "backends", "workers", "chunksize", "repeats"]
DOCUMENT_KEYS = ["source", "note", "params", "runs", "claims"]
RUN_KEYS = ["label", "backend", "workers", "chunksize", "seconds", "result"]
CLAIM_KEYS = ["text", "better", "worse", "metric", "higher_is_better", "by", "differs"]


@dataclass(frozen=True)
class Cell:
    """One point of the matrix; `key` identifies it in the results file (repeats share it)."""

    experiment: str
    task: str
    params: dict[str, Any]
    backend: str
    options: dict[str, Any]
    workers: int
    chunksize: int | None
    chunk_label: str  # "auto", "rule" or the number, as the config said it
    reuse: bool
    seed: int
    items: int | None
    run_timeout: float | None = None  # a cell past it stops its back-end; the batch goes on

    @property
    def key(self) -> str:
        return json.dumps({"experiment": self.experiment, "task": self.task, "params": self.params,
                           "backend": self.backend, "options": self.options, "workers": self.workers,
                           "chunksize": self.chunk_label, "seed": self.seed}, sort_keys=True, default=repr)

    def job(self) -> Job:
        return Job(self.task, self.params, self.backend, self.options, self.workers, self.chunksize,
                   self.seed, run_timeout=self.run_timeout)


@dataclass
class BatchSpec:
    """A validated batch file: its cells, the cells it must skip (and why), and what the report needs."""

    name: str
    source: str
    profile: str
    out: Path
    repeats: dict[str, int]
    cells: list[Cell]
    skipped: list[dict[str, Any]]
    experiments: list[dict[str, Any]]


@dataclass
class BatchOutcome:
    out: Path
    ran: int = 0
    already: int = 0
    notes: list[str] = field(default_factory=list)
    failed: int = 0  # groups of cells that failed (each has a note); a rerun resumes them


def load_batch(path: str | Path, quick: bool = False, out: str | Path | None = None) -> BatchSpec:
    """Read and validate a batch file strictly; every error names the file, the key and the value."""
    source = str(path)
    data = read_yaml(path)
    top = _mapping(data, source, BATCH_KEYS)
    name = _kind(top.get("name", Path(path).stem), str, f"{source}: name")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        # It becomes a folder name under results/: no separators, no '..', nothing hidden.
        raise ConfigError(f"{source}: name: {name!r} is not a safe folder name; use letters, digits, "
                          "'.', '_' and '-' (starting with a letter or digit)")
    repeats = _count(top.get("repeats", 1), f"{source}: repeats")
    seed = _kind(top.get("seed", DEFAULT_SEED), int, f"{source}: seed")
    quick_top = _mapping(top.get("quick", {}), f"{source}: quick", ["repeats"])
    if quick:
        repeats = _count(quick_top.get("repeats", repeats), f"{source}: quick.repeats")
    experiments = top.get("experiments")
    if not isinstance(experiments, list) or not experiments:
        raise ConfigError(f"{source}: experiments: expected a non-empty list of experiments, "
                          f"got {experiments!r:.80}")
    default_out = Path("results") / (f"{name}-quick" if quick else name)
    spec = BatchSpec(name, source, "quick" if quick else "full",
                     Path(out) if out is not None else Path(top.get("out", default_out)), {}, [], [], [])
    seen: set[str] = set()
    for index, raw in enumerate(experiments):
        where = f"{source}: experiments[{index}]"
        exp = _mapping(raw, where, EXPERIMENT_KEYS)
        exp_name = _kind(exp.get("name"), str, f"{where}.name")
        where = f"{source}: experiment {exp_name!r}"
        if exp_name in seen:
            raise ConfigError(f"{where}: the name is used twice; experiment names must be unique")
        seen.add(exp_name)
        _experiment_cells(spec, exp, exp_name, where, quick, repeats, seed)
    return spec


def _experiment_cells(spec: BatchSpec, exp: dict[str, Any], name: str, where: str, quick: bool,
                      repeats: int, seed: int) -> None:
    overrides = _mapping(exp.get("quick", {}), f"{where}.quick", QUICK_KEYS) if quick else {}
    task = _kind(exp.get("task"), str, f"{where}.task")
    params = {**_mapping(exp.get("params", {}), f"{where}.params", None),
              **_mapping(overrides.get("params", {}), f"{where}.quick.params", None)}
    vary = _mapping(overrides.get("vary", exp.get("vary", {})), f"{where}.vary", None)
    for key, values in vary.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.vary.{key}: expected a non-empty list of values, got {values!r}")
    backends = [split_backend(b, f"{where}.backends[{i}]")
                for i, b in enumerate(_list(overrides.get("backends", exp.get("backends", ["serial"])),
                                            f"{where}.backends"))]
    workers = [_count(w, f"{where}.workers") for w in
               _list(overrides.get("workers", exp.get("workers", [1])), f"{where}.workers")]
    chunks = _list(overrides.get("chunksize", exp.get("chunksize", ["auto"])), f"{where}.chunksize")
    for c in chunks:
        if c not in ("auto", "rule") and (not isinstance(c, int) or isinstance(c, bool) or c < 1):
            raise ConfigError(f"{where}.chunksize: expected a positive integer, 'auto' or 'rule' "
                              f"(len // (workers * 4), the document's rule of thumb), got {c!r}")
    reuse = _kind(exp.get("reuse", True), bool, f"{where}.reuse")
    run_timeout = exp.get("run_timeout")
    spec.repeats[name] = _count(overrides.get("repeats", exp.get("repeats", repeats)), f"{where}.repeats")
    document = _document(exp.get("document"), f"{where}.document")
    spec.experiments.append({"name": name, "title": exp.get("title", name), "task": task,
                             "document": document, "repeats": spec.repeats[name]})
    known = set(backend_names())
    for combo in itertools.product(*vary.values()) if vary else [()]:
        cell_params = {**params, **dict(zip(vary, combo, strict=True))}
        for (backend, options), count, chunk in itertools.product(backends, workers, chunks):
            if backend not in known:
                raise ConfigError(f"{where}.backends: unknown back-end {backend!r}; expected one of "
                                  f"[{', '.join(sorted(known))}]")
            if backend == "serial":  # one worker, no batching cost: one baseline cell is enough
                count, chunk = 1, chunk if len(chunks) == 1 else "auto"
            what = {"experiment": name, "backend": backend, "workers": count}
            ok, note = backend_status(backend)
            if not ok:
                spec.skipped.append({**what, "reason": note})
                continue
            try:
                the_plan = plan(Job(task, cell_params, backend, options, count, None, seed,
                                    run_timeout=run_timeout))
                items = _length(the_plan.task.split(the_plan.params, seed))
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from exc
            size = None if chunk == "auto" else chunk
            if chunk == "rule":
                size = max(1, (items or 0) // (count * 4))
            cell = Cell(name, task, cell_params, backend, dict(options), count, size, str(chunk), reuse,
                        seed, items, run_timeout)
            if all(c.key != cell.key for c in spec.cells):
                spec.cells.append(cell)


def run_batch_file(path: str | Path, out: str | Path | None = None, quick: bool = False,
                   dry_run: bool = False, echo: Callable[[str], None] = print,
                   show_progress: bool | None = None) -> BatchOutcome:
    """Run (or resume) a batch file; returns where the results are. Ctrl-C keeps finished records."""
    spec = load_batch(path, quick, out)
    try:
        spec.out.mkdir(parents=True, exist_ok=True)
        if not dry_run:
            (spec.out / RESULTS).touch()  # fail now, not after the first cell ran
    except OSError as exc:
        raise ConfigError(f"output folder {str(spec.out)!r} cannot be written ({exc.strerror or exc}); "
                          "choose another with --out") from exc
    results = spec.out / RESULTS
    done = {(r["cell"], r["repeat"]) for r in read_results(results, repair=not dry_run)}
    todo = [(c, r) for c in spec.cells for r in range(spec.repeats[c.experiment]) if (c.key, r) not in done]
    outcome = BatchOutcome(spec.out, already=len(done))
    skipped = [f"skipped {s['backend']} x{s['workers']} in {s['experiment']}: {s['reason']}"
                     for s in spec.skipped]
    if dry_run:
        for cell in spec.cells:
            left = sum(1 for c, _ in todo if c is cell)
            echo(f"{cell.experiment:<12} {cell.task:<10} {cell.backend:<16} workers={cell.workers:<3} "
                 f"chunksize={cell.chunk_label:<6} {_short_params(cell.params):<40} "
                 f"{left}/{spec.repeats[cell.experiment]} to run")
        for note in skipped:
            echo(note)
        return outcome
    _write_meta(spec)
    groups: dict[str, list[tuple[Cell, int]]] = {}
    for cell, repeat in todo:
        group = json.dumps([cell.backend, cell.options, cell.workers], sort_keys=True, default=repr)
        if not cell.reuse:
            group += f" {cell.key} {repeat}"  # started per run: cold start-up is what is measured
        groups.setdefault(group, []).append((cell, repeat))
    total_items = sum(c.items or 0 for c, _ in todo)
    with _Progress(len(todo), total_items, show_progress) as progress, open(results, "a") as store:
        for runs in groups.values():
            try:
                outcome.ran += _run_group(runs, store, spec, progress)
            except RunnersError as exc:  # a broken back-end loses its group, not the batch
                outcome.notes.append(f"failed {runs[0][0].backend} x{runs[0][0].workers}: {exc}")
                outcome.failed += 1
    _write_meta(spec, outcome.notes)
    outcome.notes = skipped + outcome.notes
    return outcome


def _run_group(runs: list[tuple[Cell, int]], store: Any, spec: BatchSpec, progress: _Progress) -> int:
    first = runs[0][0]
    if not first.reuse:
        for cell, repeat in runs:
            began = _now()
            record = run(cell.job()).to_dict()
            record["wall"] = record["timings"]["total"]  # a cold run: start-up and shut-down count
            _append(store, _record(record, cell, repeat, spec, began, record["timings"]["startup"], False))
            progress.advance(cell.items or 0, cell_done=True)
        return len(runs)
    backend = plan(first.job()).make_backend()
    started = time.perf_counter()
    with backend:
        startup = time.perf_counter() - started
        for number, (cell, repeat) in enumerate(runs):
            began = _now()
            record = run_on(backend, plan(cell.job()), progress=progress.advance).to_dict()
            record["timings"]["startup"] = startup
            _append(store, _record(record, cell, repeat, spec, began, startup, number > 0))
            progress.advance(0, cell_done=True)
    return len(runs)


def _record(record: dict[str, Any], cell: Cell, repeat: int, spec: BatchSpec, began: str,
            startup: float, warm: bool) -> dict[str, Any]:
    record.setdefault("wall", record["timings"]["compute"])
    return {**record, "experiment": cell.experiment, "cell": cell.key, "repeat": repeat,
            "chunksize_label": cell.chunk_label, "profile": spec.profile, "backend_startup": startup,
            "warm": warm, "started_at": began, "finished_at": _now()}


def _append(store: Any, record: dict[str, Any]) -> None:
    store.write(json.dumps(record, default=repr) + "\n")
    store.flush()
    os.fsync(store.fileno())  # a SIGKILL after this line leaves the record on disk


def read_results(path: str | Path, repair: bool = False) -> list[dict[str, Any]]:
    """The records of a results file. A torn last line (a killed run) is ignored, and cut off if `repair`."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    records, good_end, position = [], 0, 0
    for line in data.split(b"\n"):
        end = position + len(line) + 1
        if end > len(data):  # the piece after the last newline: empty, or a torn write
            break
        try:
            records.append(json.loads(line))
            good_end = end
        except ValueError:
            if end < len(data):
                raise RunnersError(f"{path}: line {len(records) + 1} is not JSON; the results file is "
                                   "damaged before its end, so it was not written by an interrupted "
                                   "run; move it away to start afresh") from None
            break
        position = end
    if repair and good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return records


def _write_meta(spec: BatchSpec, notes: Sequence[str] = ()) -> None:
    meta = {"name": spec.name, "source": spec.source, "profile": spec.profile,
            "experiments": spec.experiments, "skipped": spec.skipped, "notes": list(notes),
            "system": system_info()}
    (spec.out / META).write_text(json.dumps(meta, indent=2, default=repr) + "\n", encoding="utf-8")


class _Progress:
    """Cells and items done, with ETA: a rich bar on a terminal, nothing otherwise."""

    def __init__(self, cells: int, items: int, show: bool | None) -> None:
        self.show = sys.stdout.isatty() if show is None else show
        self.cells, self.items = cells, items
        self._bar: Any = None

    def __enter__(self) -> _Progress:
        if self.show:
            with contextlib.suppress(ImportError):
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    Progress,
                    TextColumn,
                    TimeRemainingColumn,
                )
                self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), transient=True)
                self._bar.start()
                self._cells = self._bar.add_task("cells", total=self.cells)
                self._items = self._bar.add_task("items", total=self.items or None)
        return self

    def advance(self, items: int, cell_done: bool = False) -> None:
        if self._bar is not None:
            self._bar.advance(self._items, items)
            if cell_done:
                self._bar.advance(self._cells, 1)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _mapping(value: Any, where: str, allowed: list[str] | None) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r:.80}")
    if allowed is not None:
        for key in value:
            if key not in allowed:
                raise ConfigError(unknown_key_message(where, str(key), allowed))
    return dict(value)


def _list(value: Any, where: str) -> list[Any]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ConfigError(f"{where}: expected at least one value, got an empty list")
    return values


def _kind(value: Any, kind: type, where: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {'a string' if kind is str else kind.__name__}, got {value!r}")
    return value


def _count(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where}: expected a positive integer (1 or more), got {value!r}")
    return value


def _document(value: Any, where: str) -> dict[str, Any] | None:
    """The source document's published figures for an experiment, checked for shape only."""
    if value is None:
        return None
    doc = _mapping(value, where, DOCUMENT_KEYS)
    for i, entry in enumerate(_list(doc.get("runs", []) or [{}], f"{where}.runs")):
        if entry:
            _mapping(entry, f"{where}.runs[{i}]", RUN_KEYS)
    for i, claim in enumerate(doc.get("claims", []) or []):
        claim = _mapping(claim, f"{where}.claims[{i}]", CLAIM_KEYS)
        _kind(claim.get("text"), str, f"{where}.claims[{i}].text")
    return doc


def _length(items: Any) -> int | None:
    try:
        return len(items)
    except TypeError:
        return None


def _short_params(params: Mapping[str, Any]) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in params.items())
    return text if len(text) <= 40 else text[:37] + "..."


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


__all__ = ["BatchOutcome", "BatchSpec", "Cell", "load_batch", "read_results", "run_batch_file"]
