"""Batch files: a YAML matrix of tasks x params x back-ends x workers x chunksizes x repeats, validated.

`load_batch` reads a batch file strictly (every error names the file, the key path and the value) and
turns it into cells: one configuration each, which the batch runs `repeats` times. How the runs are
ordered and run is `_schedule` and `_batch`.

An experiment with `parts` measures one subject with several tasks (the summary table: CPU-bound work,
waits, a data-sharing task): each part is an experiment of its own (`NAME.PART`, its own cells, windows
and baselines) and the report shows them together, under the experiment's title.
"""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._claims import CLAIMS
from ._config import read_yaml, split_backend
from ._engine import DEFAULT_SEED, Job, plan
from ._errors import ConfigError
from ._registry import backend_names, backend_status, load_backend
from ._validate import unknown_key_message

BATCH_KEYS = ["name", "out", "repeats", "seed", "quick", "experiments"]
EXPERIMENT_KEYS = ["name", "title", "task", "params", "vary", "backends", "workers", "chunksize",
                   "repeats", "reuse", "memory", "run_timeout", "sample", "quick", "document"]
PARTED_KEYS = ["name", "title", "parts"]  # an experiment with parts: the rest is each part's
QUICK_KEYS = ["params", "vary", "backends", "workers", "chunksize", "repeats"]
DOCUMENT_KEYS = ["source", "note", "params", "unit", "runs", "claims"]
RUN_KEYS = ["label", "backend", "workers", "chunksize", "seconds", "result"]
UNIT_KEYS = ["param", "per", "name"]
SAMPLE_KEYS = ["when", "params"]
SAMPLE_WHEN_KEYS = ["backend", "workers", "chunksize"]
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
    memory: bool = False  # record the process tree's memory beside each run (see _batch)

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
    seed: int = DEFAULT_SEED


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
                     Path(out) if out is not None else Path(top.get("out", default_out)), {}, [], [], [],
                     seed)
    seen: set[str] = set()
    for index, raw in enumerate(experiments):
        where = f"{source}: experiments[{index}]"
        parted = isinstance(raw, Mapping) and "parts" in raw
        exp = _mapping(raw, where, PARTED_KEYS if parted else EXPERIMENT_KEYS)
        exp_name = _kind(exp.get("name"), str, f"{where}.name")
        where = f"{source}: experiment {exp_name!r}"
        if exp_name in seen:
            raise ConfigError(f"{where}: the name is used twice; experiment names must be unique")
        seen.add(exp_name)
        if parted:
            _parts(spec, exp, exp_name, where, quick, repeats, seed)
        else:
            _experiment_cells(spec, exp, exp_name, where, quick, repeats, seed)
    return spec


def _parts(spec: BatchSpec, exp: dict[str, Any], name: str, where: str, quick: bool, repeats: int,
           seed: int) -> None:
    """Each part becomes the experiment `NAME.PART`, marked as a section of `NAME`."""
    parts = exp["parts"]
    if not isinstance(parts, Mapping) or not parts:
        raise ConfigError(f"{where}.parts: expected a mapping of part names to experiments (task, params, "
                          f"backends, ...), got {parts!r:.80}")
    title = _kind(exp.get("title", name), str, f"{where}.title")
    for part, raw in parts.items():
        if not isinstance(part, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}", part):
            raise ConfigError(f"{where}.parts: {part!r} is not a part name; use letters, digits, '_' "
                              "and '-'")
        part_where = f"{where}.parts.{part}"
        body = _mapping(raw, part_where, [k for k in EXPERIMENT_KEYS if k != "name"])
        _experiment_cells(spec, {**body, "name": f"{name}.{part}"}, f"{name}.{part}", part_where, quick,
                          repeats, seed)
        spec.experiments[-1].update(section=name, section_title=title, part=part)


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
    workers = [_count(w, f"{where}.workers") for w in
               _list(overrides.get("workers", exp.get("workers", [1])), f"{where}.workers")]
    backends = [_backend_entry(b, workers, f"{where}.backends[{i}]")
                for i, b in enumerate(_list(overrides.get("backends", exp.get("backends", ["serial"])),
                                            f"{where}.backends"))]
    chunks = _list(overrides.get("chunksize", exp.get("chunksize", ["auto"])), f"{where}.chunksize")
    for c in chunks:
        if c not in ("auto", "rule") and (not isinstance(c, int) or isinstance(c, bool) or c < 1):
            raise ConfigError(f"{where}.chunksize: expected a positive integer, 'auto' or 'rule' "
                              f"(len // (workers * 4), the document's rule of thumb), got {c!r}")
    reuse = _kind(exp.get("reuse", True), bool, f"{where}.reuse")
    memory = _kind(exp.get("memory", False), bool, f"{where}.memory")
    if memory and not reuse:
        raise ConfigError(f"{where}.memory: needs reuse: true (the memory beside a run is its started "
                          "back-end's; a cold run starts and stops its own inside the run)")
    run_timeout = exp.get("run_timeout")
    sample = _sample(exp.get("sample"), f"{where}.sample")
    spec.repeats[name] = _count(overrides.get("repeats", exp.get("repeats", repeats)), f"{where}.repeats")
    document = _document(exp.get("document"), f"{where}.document")
    known = set(backend_names())
    cells: list[Cell] = []
    ran_params: dict[str, Any] = {}
    for combo in itertools.product(*vary.values()) if vary else [()]:
        cell_params = {**params, **dict(zip(vary, combo, strict=True))}
        pairs = [(entry[:2], count) for entry in backends for count in entry[2]]
        for ((backend, options), count), chunk in itertools.product(pairs, chunks):
            if backend not in known:
                raise ConfigError(f"{where}.backends: unknown back-end {backend!r}; expected one of "
                                  f"[{', '.join(sorted(known))}]")
            if backend == "serial":  # one worker, no batching cost: one baseline cell is enough
                count, chunk = 1, chunk if len(chunks) == 1 else "auto"
            label = configuration_name(backend, options)
            ok, note = backend_status(backend)
            if not ok:
                spec.skipped.append({"experiment": name, "backend": label, "workers": count, "reason": note})
                continue
            sampled = None
            if sample and all(str(v) == str({"backend": backend, "workers": count, "chunksize": chunk}[k])
                              for k, v in sample["when"].items()):
                sampled = {"params": sample["params"]}
            try:
                the_plan = plan(Job(task, cell_params, backend, options, count, None, seed,
                                    run_timeout=run_timeout))
                items = _length(the_plan.task.split(the_plan.params, seed))
                ran_params = ran_params or dataclasses.asdict(the_plan.params)
                if sampled:
                    small = plan(Job(task, {**cell_params, **sampled["params"]}, backend, options, count))
                    sampled.update(items=_length(small.task.split(small.params, seed)), of=items)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from exc
            runs_items = sampled["items"] if sampled else items
            size = None if chunk == "auto" else chunk
            if chunk == "rule":
                size = max(1, (runs_items or 0) // (count * 4))
            window = SHARED if reuse else COLD
            # Schedulers and daemons keep working while idle: alone. So is a back-end whose memory is
            # measured: the process tree beside its runs must hold no other back-end.
            if reuse and backend != "serial" and (the_plan.backend.distributed or memory):
                window = f"{label} x{count}"
            cell = Cell(name, task, cell_params, backend, dict(options), count, size, str(chunk), reuse,
                        seed, items, run_timeout, label, window, None, sampled, memory)
            if all(c.key != cell.key for c in cells):
                cells.append(cell)
    # Every window but the shared one runs the baseline again beside its back-end, so that each ratio
    # comes from runs taken close together.
    baselines = [c for c in cells if c.backend == "serial" and c.window == SHARED]
    others = list(dict.fromkeys(c.window for c in cells if c.window not in (SHARED, COLD)))
    for window in others:
        cells += [dataclasses.replace(b, window=window, beside=window) for b in baselines]
    if others and not any(c.window == SHARED and c.backend != "serial" for c in cells):
        cells = [c for c in cells if c not in baselines]  # no one to pair with in the shared window
    spec.cells += cells
    title = _title(exp.get("title", name), ran_params, list(vary), f"{where}.title")
    spec.experiments.append({"name": name, "title": title, "task": task, "params": ran_params,
                             "varied": list(vary), "document": document, "repeats": spec.repeats[name],
                             "reuse": reuse, "memory": memory, "sample": sample})


def _backend_entry(value: Any, workers: list[int], where: str) -> tuple[str, dict[str, Any], list[int]]:
    """A back-end entry: `NAME`, or `{name: NAME, option: value, ..., workers: [..]}`, whose own `workers`
    replace the experiment's for it (threads wait on 200 waits at once, processes on 8)."""
    own = workers
    if isinstance(value, Mapping) and "workers" in value:
        value = dict(value)
        own = [_count(w, f"{where}.workers") for w in _list(value.pop("workers"), f"{where}.workers")]
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


def _title(template: Any, params: Mapping[str, Any], varied: list[str], where: str) -> str:
    """The experiment's title with `{param}` / `{param:,}` filled in from the params that ran."""
    template = _kind(template, str, where)
    try:
        names = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
        for field in names:
            if field in varied:
                raise ConfigError(f"{where}: {{{field}}} names a parameter that varies between cells; "
                                  "the params column shows it per row")
            if field not in params:
                raise ConfigError(f"{where}: {{{field}}} is not a parameter of the task; expected one "
                                  f"of {sorted(params)}")
        return template.format_map(params)
    except (ValueError, IndexError) as exc:
        raise ConfigError(f"{where}: {template!r} is not a valid title template ({exc}); write "
                          "parameters as {samples} or {samples:,}, and braces as {{ }}") from None


def _sample(value: Any, where: str) -> dict[str, Any] | None:
    """Cells (matched by `when`) too dear to run whole: run on `params` and extrapolated by items."""
    if value is None:
        return None
    sample = _mapping(value, where, SAMPLE_KEYS)
    when = _mapping(sample.get("when", {}), f"{where}.when", SAMPLE_WHEN_KEYS)
    params = _mapping(sample.get("params"), f"{where}.params", None)
    if not when or not params:
        raise ConfigError(f"{where}: expected both 'when' (which cells, by backend, workers or "
                          "chunksize) and 'params' (the smaller size to run them at)")
    return {"when": when, "params": params}


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
    """The source document's published figures and the claims judged on an experiment."""
    if value is None:
        return None
    doc = _mapping(value, where, DOCUMENT_KEYS)
    for i, entry in enumerate(_list(doc.get("runs", []) or [{}], f"{where}.runs")):
        if entry:
            _mapping(entry, f"{where}.runs[{i}]", RUN_KEYS)
    if "unit" in doc:
        unit = _mapping(doc["unit"], f"{where}.unit", UNIT_KEYS)
        _kind(unit.get("param"), str, f"{where}.unit.param")
        _count(unit.get("per", 1), f"{where}.unit.per")
        _kind(unit.get("name"), str, f"{where}.unit.name")
    known = {claim.id for claim in CLAIMS}
    for i, claim in enumerate(doc.get("claims", []) or []):
        if claim not in known:
            close = difflib.get_close_matches(str(claim), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}.claims[{i}]: unknown claim {claim!r}{hint}; the claims table "
                              f"(runners._claims) has: {', '.join(sorted(known))}")
    return doc


def _length(items: Any) -> int | None:
    try:
        return len(items)
    except TypeError:
        return None


__all__ = ["COLD", "SHARED", "BatchSpec", "Cell", "configuration_name", "load_batch"]
