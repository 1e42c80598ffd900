"""Matrix files (`runners batch FILE`): a YAML matrix of tasks x params x back-ends x workers x
chunksizes x repeats, validated.

`load_matrix` reads a matrix file strictly (every error names the file, the key path and the value) and
turns it into cells: one configuration each, which `runners batch` runs `repeats` times. How the runs are
ordered and run is `_schedule` and `_matrix_run`.

An experiment with `parts` measures one subject with several tasks (the summary table: CPU-bound work,
waits, a data-sharing task): each part is an experiment of its own (`NAME.PART`, its own cells, windows
and baselines) and the report shows them together, under the experiment's title.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _matrix_checks as check
from ._batcher import rule_of_thumb
from ._config import read_yaml, split_backend
from ._engine import DEFAULT_SEED, Job, plan
from ._errors import ConfigError
from ._registry import backend_names, backend_status, load_backend

MATRIX_KEYS = ["name", "out", "repeats", "seed", "quick", "experiments"]
EXPERIMENT_KEYS = ["name", "title", "task", "params", "vary", "backends", "workers", "chunksize",
                   "repeats", "reuse", "memory", "run_timeout", "sample", "quick", "document"]
PARTED_KEYS = ["name", "title", "parts"]  # an experiment with parts: the rest is each part's
QUICK_KEYS = ["params", "vary", "backends", "workers", "chunksize", "repeats"]
SHARED = "shared"  # the window of the back-ends that cost nothing while idle
COLD = "cold"  # the window of an experiment that starts a fresh back-end for every run


@dataclass(frozen=True)
class Cell:
    """One configuration of an experiment; `key` identifies it in the results file (repeats share it)."""

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
    label: str = ""  # the configuration's name: the back-end and every option that differs
    window: str = SHARED  # the runs that are ordered together, in rounds (see _schedule)
    beside: str | None = None  # a baseline re-run beside this window's back-end, paired with its runs
    sample: dict[str, Any] | None = None  # {"params", "items", "of"}: run on a sample, extrapolated
    memory: bool = False  # record the process tree's memory beside each run (see _matrix_run)

    @property
    def key(self) -> str:
        fields = {"experiment": self.experiment, "task": self.task, "params": self.params,
                  "backend": self.backend, "options": self.options, "workers": self.workers,
                  "chunksize": self.chunk_label, "seed": self.seed}
        if self.beside:
            fields["beside"] = self.beside
        return json.dumps(fields, sort_keys=True, default=repr)

    @property
    def group(self) -> str:
        """The back-end instance this cell runs on: its configuration and worker count."""
        return f"{self.label} x{self.workers}"

    def job(self) -> Job:
        params = {**self.params, **self.sample["params"]} if self.sample else self.params
        return Job(self.task, params, self.backend, self.options, self.workers, self.chunksize,
                   self.seed, run_timeout=self.run_timeout)


@dataclass
class Matrix:
    """A validated batch file: its cells, the cells it must skip (and why), and what the report needs."""

    name: str
    source: str
    profile: str
    out: Path
    repeats: dict[str, int]
    cells: list[Cell]
    skipped: list[dict[str, Any]]
    experiments: list[dict[str, Any]]
    seed: int = DEFAULT_SEED


def load_matrix(path: str | Path, quick: bool = False, out: str | Path | None = None) -> Matrix:
    """Read and validate a batch file strictly; every error names the file, the key and the value."""
    source = str(path)
    data = read_yaml(path)
    top = check.mapping(data, source, MATRIX_KEYS)
    name = check.kind(top.get("name", Path(path).stem), str, f"{source}: name")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        # It becomes a folder name under results/: no separators, no '..', nothing hidden.
        raise ConfigError(f"{source}: name: {name!r} is not a safe folder name; use letters, digits, "
                          "'.', '_' and '-' (starting with a letter or digit)")
    repeats = check.count(top.get("repeats", 1), f"{source}: repeats")
    seed = check.kind(top.get("seed", DEFAULT_SEED), int, f"{source}: seed")
    quick_top = check.mapping(top.get("quick", {}), f"{source}: quick", ["repeats"])
    if quick:
        repeats = check.count(quick_top.get("repeats", repeats), f"{source}: quick.repeats")
    experiments = top.get("experiments")
    if not isinstance(experiments, list) or not experiments:
        raise ConfigError(f"{source}: experiments: expected a non-empty list of experiments, "
                          f"got {experiments!r:.80}")
    default_out = Path("results") / (f"{name}-quick" if quick else name)
    matrix = Matrix(name, source, "quick" if quick else "full",
                     Path(out) if out is not None else Path(top.get("out", default_out)), {}, [], [], [],
                     seed)
    seen: set[str] = set()
    for index, raw in enumerate(experiments):
        where = f"{source}: experiments[{index}]"
        parted = isinstance(raw, Mapping) and "parts" in raw
        exp = check.mapping(raw, where, PARTED_KEYS if parted else EXPERIMENT_KEYS)
        exp_name = check.kind(exp.get("name"), str, f"{where}.name")
        where = f"{source}: experiment {exp_name!r}"
        if exp_name in seen:
            raise ConfigError(f"{where}: the name is used twice; experiment names must be unique")
        seen.add(exp_name)
        if parted:
            _parts(matrix, exp, exp_name, where, quick, repeats, seed)
        else:
            _experiment_cells(matrix, exp, exp_name, where, quick, repeats, seed)
    return matrix


def _parts(matrix: Matrix, exp: dict[str, Any], name: str, where: str, quick: bool, repeats: int,
           seed: int) -> None:
    """Each part becomes the experiment `NAME.PART`, marked as a section of `NAME`."""
    parts = exp["parts"]
    if not isinstance(parts, Mapping) or not parts:
        raise ConfigError(f"{where}.parts: expected a mapping of part names to experiments (task, params, "
                          f"backends, ...), got {parts!r:.80}")
    title = check.kind(exp.get("title", name), str, f"{where}.title")
    for part, raw in parts.items():
        if not isinstance(part, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}", part):
            raise ConfigError(f"{where}.parts: {part!r} is not a part name; use letters, digits, '_' "
                              "and '-'")
        part_where = f"{where}.parts.{part}"
        body = check.mapping(raw, part_where, [k for k in EXPERIMENT_KEYS if k != "name"])
        _experiment_cells(matrix, {**body, "name": f"{name}.{part}"}, f"{name}.{part}", part_where, quick,
                          repeats, seed)
        matrix.experiments[-1].update(section=name, section_title=title, part=part)


@dataclass(frozen=True)
class Experiment:
    """One experiment of a matrix file, validated: what its cells are made from."""

    name: str
    where: str  # how errors name it: "FILE: experiment 'NAME'"
    task: str
    params: dict[str, Any]
    vary: dict[str, list[Any]]
    backends: list[tuple[str, dict[str, Any], list[int]]]  # (name, options, worker counts)
    chunks: list[int | str]  # sizes, "auto" or "rule"
    reuse: bool
    memory: bool
    run_timeout: float | None
    sample: dict[str, Any] | None
    seed: int


def _experiment_cells(matrix: Matrix, exp: dict[str, Any], name: str, where: str, quick: bool,
                      repeats: int, seed: int) -> None:
    """Validate one experiment and add its cells (and the baselines run beside its windows) to `matrix`."""
    overrides = check.mapping(exp.get("quick", {}), f"{where}.quick", QUICK_KEYS) if quick else {}
    experiment = _experiment(exp, overrides, name, where, seed)
    matrix.repeats[name] = check.count(overrides.get("repeats", exp.get("repeats", repeats)),
                                       f"{where}.repeats")
    document = check.document(exp.get("document"), f"{where}.document")
    cells: list[Cell] = []
    ran_params: dict[str, Any] = {}
    for combo in itertools.product(*experiment.vary.values()) if experiment.vary else [()]:
        cell_params = {**experiment.params, **dict(zip(experiment.vary, combo, strict=True))}
        pairs = [(entry[:2], count) for entry in experiment.backends for count in entry[2]]
        for ((backend, options), count), chunk in itertools.product(pairs, experiment.chunks):
            if backend == "serial":  # one worker, no batching cost: one baseline cell is enough
                count, chunk = 1, chunk if len(experiment.chunks) == 1 else "auto"
            made = _cell(experiment, cell_params, backend, options, count, chunk, matrix.skipped)
            if made is None:
                continue
            cell, params = made
            ran_params = ran_params or params
            if all(c.key != cell.key for c in cells):
                cells.append(cell)
    matrix.cells += _with_baselines_beside(cells)
    title = check.title(exp.get("title", name), ran_params, list(experiment.vary), f"{where}.title")
    matrix.experiments.append({"name": name, "title": title, "task": experiment.task, "params": ran_params,
                               "varied": list(experiment.vary), "document": document,
                               "repeats": matrix.repeats[name], "reuse": experiment.reuse,
                               "memory": experiment.memory, "sample": experiment.sample})


def _experiment(exp: dict[str, Any], overrides: dict[str, Any], name: str, where: str,
                seed: int) -> Experiment:
    """The experiment's keys checked one by one, the quick profile's `overrides` applied."""
    task = check.kind(exp.get("task"), str, f"{where}.task")
    params = {**check.mapping(exp.get("params", {}), f"{where}.params", None),
              **check.mapping(overrides.get("params", {}), f"{where}.quick.params", None)}
    vary = check.mapping(overrides.get("vary", exp.get("vary", {})), f"{where}.vary", None)
    for key, values in vary.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.vary.{key}: expected a non-empty list of values, got {values!r}")
    workers = [check.count(w, f"{where}.workers") for w in
               check.values(overrides.get("workers", exp.get("workers", [1])), f"{where}.workers")]
    entries = check.values(overrides.get("backends", exp.get("backends", ["serial"])), f"{where}.backends")
    backends = [_backend_entry(b, workers, f"{where}.backends[{i}]") for i, b in enumerate(entries)]
    chunks = check.values(overrides.get("chunksize", exp.get("chunksize", ["auto"])), f"{where}.chunksize")
    for c in chunks:
        if c not in ("auto", "rule") and (not isinstance(c, int) or isinstance(c, bool) or c < 1):
            raise ConfigError(f"{where}.chunksize: expected a positive integer, 'auto' or 'rule' "
                              f"(len // (workers * 4), the document's rule of thumb), got {c!r}")
    reuse = check.kind(exp.get("reuse", True), bool, f"{where}.reuse")
    memory = check.kind(exp.get("memory", False), bool, f"{where}.memory")
    if memory and not reuse:
        raise ConfigError(f"{where}.memory: needs reuse: true (the memory beside a run is its started "
                          "back-end's; a cold run starts and stops its own inside the run)")
    sample = check.sample(exp.get("sample"), f"{where}.sample")
    known = set(backend_names())
    for backend, _, _ in backends:
        if backend not in known:
            raise ConfigError(f"{where}.backends: unknown back-end {backend!r}; expected one of "
                              f"[{', '.join(sorted(known))}]")
    return Experiment(name, where, task, params, vary, backends, chunks, reuse, memory,
                      exp.get("run_timeout"), sample, seed)


def _cell(experiment: Experiment, params: dict[str, Any], backend: str, options: dict[str, Any], count: int,
          chunk: int | str, skipped: list[dict[str, Any]]) -> tuple[Cell, dict[str, Any]] | None:
    """The cell of one configuration, planned (so a bad value fails now), with the task's params as
    they ran; None (and a line in `skipped`) when its back-end is not installed."""
    label = configuration_name(backend, options)
    ok, note = backend_status(backend)
    if not ok:
        skipped.append({"experiment": experiment.name, "backend": label, "workers": count, "reason": note})
        return None
    sample, seed, where = experiment.sample, experiment.seed, experiment.where
    sampled = None
    if sample and all(str(v) == str({"backend": backend, "workers": count, "chunksize": chunk}[k])
                      for k, v in sample["when"].items()):
        sampled = {"params": sample["params"]}
    try:
        the_plan = plan(Job(experiment.task, params, backend, options, count, None, seed,
                            run_timeout=experiment.run_timeout))
        items = check.length(the_plan.task.split(the_plan.params, seed))
        if sampled:
            small = plan(Job(experiment.task, {**params, **sampled["params"]}, backend, options, count))
            sampled.update(items=check.length(small.task.split(small.params, seed)), of=items)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    runs_items = sampled["items"] if sampled else items
    size = None if chunk == "auto" else chunk
    if chunk == "rule":
        size = rule_of_thumb(runs_items or 0, count)
    window = SHARED if experiment.reuse else COLD
    # Schedulers and daemons keep working while idle: alone. So is a back-end whose memory is
    # measured: the process tree beside its runs must hold no other back-end.
    if experiment.reuse and backend != "serial" and (the_plan.backend.distributed or experiment.memory):
        window = f"{label} x{count}"
    cell = Cell(experiment.name, experiment.task, params, backend, dict(options), count, size, str(chunk),
                experiment.reuse, seed, items, experiment.run_timeout, label, window, None, sampled,
                experiment.memory)
    return cell, dataclasses.asdict(the_plan.params)


def _with_baselines_beside(cells: list[Cell]) -> list[Cell]:
    """`cells`, and in every window but the shared one the baseline again, beside its back-end, so
    that each ratio comes from runs taken close together."""
    baselines = [c for c in cells if c.backend == "serial" and c.window == SHARED]
    others = list(dict.fromkeys(c.window for c in cells if c.window not in (SHARED, COLD)))
    for window in others:
        cells += [dataclasses.replace(b, window=window, beside=window) for b in baselines]
    if others and not any(c.window == SHARED and c.backend != "serial" for c in cells):
        cells = [c for c in cells if c not in baselines]  # no one to pair with in the shared window
    return cells


def _backend_entry(value: Any, workers: list[int], where: str) -> tuple[str, dict[str, Any], list[int]]:
    """A back-end entry: `NAME`, or `{name: NAME, option: value, ..., workers: [..]}`, whose own `workers`
    replace the experiment's for it (threads wait on 200 waits at once, processes on 8)."""
    own = workers
    if isinstance(value, Mapping) and "workers" in value:
        value = dict(value)
        own = [check.count(w, f"{where}.workers")
               for w in check.values(value.pop("workers"), f"{where}.workers")]
    backend, options = split_backend(value, where)
    return backend, options, own


def configuration_name(backend: str, options: Mapping[str, Any]) -> str:
    """`multiprocessing (spawn)`: the back-end and each option that differs from its default."""
    defaults: dict[str, Any] = {}
    try:
        defaults = dataclasses.asdict(load_backend(backend).Options())
    except (ConfigError, TypeError):  # not installed, or an option without a default
        pass
    shown = [f"{value}" if isinstance(value, str) else f"{key}={value}"
             for key, value in options.items() if key not in defaults or defaults[key] != value]
    return f"{backend} ({', '.join(shown)})" if shown else backend


__all__ = ["COLD", "SHARED", "Matrix", "Cell", "configuration_name", "load_matrix"]
