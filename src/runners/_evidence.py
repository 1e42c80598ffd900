"""What an experiment's records say: one row per configuration, ratios from runs taken side by side.

A row is one configuration (back-end and its differing options, workers, chunksize, params) with the
median of its runs. Its speed-up is not the baseline's median over its own: each of its runs is paired
with the baseline run of the same window nearest in time, and the speed-up is the median of those
ratios. A ratio is marked noisy, with the figure, when its baseline drifted by more than DRIFT between
its runs, when the machine's 2-process headroom was below HEADROOM during any run it used, or when a
pair lies more than GAP seconds apart (a batch resumed later).
"""

from __future__ import annotations

import datetime
import json
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DRIFT = 0.10  # the baseline's spread (max / min - 1) beyond which its ratios are noisy
HEADROOM = 1.7  # 2-process headroom below which the machine was too busy for a clean ratio
GAP = 120.0  # seconds between paired runs beyond which they were not side by side
CONTROL_BAND = (0.9, 1.1)  # one worker against serial: the same work, so the same time within 10%
BASELINE = "serial"


@dataclass
class Row:
    """One configuration's runs and what the report says of them."""

    label: str  # the back-end and its differing options: "multiprocessing (spawn)"
    backend: str
    workers: int
    chunksize: str
    params: dict[str, Any]  # the configuration's params (a sample's cells: the size extrapolated to)
    task: str
    runs: list[dict[str, Any]]
    varied: str = ""  # the params that tell this row from others of the experiment: "method=numpy"
    speedup: float | None = None
    pairs: int = 0
    noisy: list[str] = field(default_factory=list)
    headroom: float | None = None  # the lowest measured during its runs and their baselines'

    @property
    def name(self) -> str:
        parts = [f"{self.label} x{self.workers}"]
        if self.chunksize != "auto":
            parts.append(f"chunksize {self.chunksize}")
        if self.varied:
            parts.append(self.varied)
        return ", ".join(parts)

    @property
    def given(self) -> dict[str, Any]:
        """The params the batch file set for this configuration (the rest are the task's defaults)."""
        return self.runs[-1].get("cell_params") or self.params

    @property
    def walls(self) -> list[float]:
        return [effective_wall(r) for r in self.runs]

    @property
    def median(self) -> float:
        return statistics.median(self.walls)

    @property
    def startup(self) -> float:
        return statistics.median(r.get("backend_startup", r["timings"]["startup"]) for r in self.runs)

    @property
    def memory_mb(self) -> float | None:
        """The median of the process tree's memory beside its runs (`memory: true` experiments), MiB."""
        known = [r["memory_mb"] for r in self.runs if r.get("memory_mb") is not None]
        return statistics.median(known) if known else None

    @property
    def efficiency(self) -> float | None:
        return None if self.speedup is None else self.speedup / self.workers

    @property
    def sample(self) -> dict[str, Any] | None:
        return self.runs[-1].get("sample")

    @property
    def result(self) -> Any:
        return self.runs[-1]["result"]

    @property
    def check(self) -> dict[str, Any]:
        return self.runs[-1]["check"]

    @property
    def is_baseline(self) -> bool:
        return self.backend == BASELINE


def effective_wall(record: Mapping[str, Any]) -> float:
    """The run's time, extrapolated to the whole size where it ran on a sample (time grows with items)."""
    sample = record.get("sample")
    factor = sample["of"] / sample["items"] if sample and sample.get("items") else 1.0
    return record["wall"] * factor


def moment(record: Mapping[str, Any]) -> float:
    """The middle of the run, in seconds since the epoch."""
    times = [datetime.datetime.fromisoformat(record[k]).timestamp()
             for k in ("started_at", "finished_at") if record.get(k)]
    return sum(times) / len(times) if times else 0.0


def rows_of(records: list[dict[str, Any]]) -> list[Row]:
    """One row per configuration, with paired speed-ups against the baseline and noisy marks."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        key = json.dumps([r.get("label", r["backend"]), r["workers"], _chunk(r), _params(r)],
                         sort_keys=True, default=repr)
        groups.setdefault(key, []).append(r)
    varied = _varied([_params(g[0]) for g in groups.values()])
    rows = []
    for runs in groups.values():
        first = runs[0]
        params = _params(first)
        rows.append(Row(first.get("label", first["backend"]), first["backend"], first["workers"],
                        _chunk(first), params, first["task"], runs,
                        ", ".join(f"{k}={params[k]}" for k in varied)))
    # The batch file's order (baseline first), not the shuffled order the runs took.
    rows.sort(key=lambda r: (not r.is_baseline, min(run.get("position", 0) for run in r.runs)))
    for row in rows:
        if row.is_baseline:
            row.speedup, row.headroom = 1.0, _lowest(r.get("headroom") for r in row.runs)
            spread = _spread(row.walls)
            if spread is not None and spread > DRIFT:
                row.noisy.append(f"its runs spread {spread:.0%} over the experiment")
            continue
        baselines = [b for b in records if b["backend"] == BASELINE and _params(b) == row.params]
        ratios, used = [], []
        for run in row.runs:
            partner = nearest(run, baselines)
            if partner is not None:
                ratios.append(effective_wall(partner) / effective_wall(run))
                used.append((run, partner))
        if ratios:
            row.speedup, row.pairs = statistics.median(ratios), len(ratios)
            row.noisy, row.headroom = noise(used)
        elif baselines:
            row.noisy.append("no baseline run in its window to pair with")
    return rows


def nearest(run: Mapping[str, Any], candidates: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The candidate of the same experiment and window as `run` that ran nearest to it in time."""
    same = [c for c in candidates if c.get("window") == run.get("window")
            and c["experiment"] == run["experiment"] and c is not run]
    if not same:
        return None
    when = moment(run)
    return min(same, key=lambda c: abs(moment(c) - when))


def noise(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> tuple[list[str], float | None]:
    """Why the ratios of these (run, partner) pairs are not clean, if they are not; the lowest headroom."""
    reasons = []
    partners = {id(p): p for _, p in pairs}.values()
    spread = _spread([effective_wall(p) for p in partners])
    if spread is not None and spread > DRIFT:
        reasons.append(f"baseline drifted {spread:.0%}")
    lowest = _lowest(r.get("headroom") for pair in pairs for r in pair)
    if lowest is not None and lowest < HEADROOM:
        reasons.append(f"headroom {lowest:.2f}")
    gap = max(abs(moment(a) - moment(b)) for a, b in pairs)
    if gap > GAP:
        reasons.append(f"pair {gap:.0f} s apart")
    return reasons, lowest


def faster(a: Row, b: Row) -> tuple[float, list[str]] | None:
    """How many times faster `a` ran than `b`: the median ratio of paired runs (same window, nearest in
    time), or, for rows of different windows, the ratio of their paired speed-ups."""
    ratios, used = [], []
    for run in a.runs:
        partner = nearest(run, b.runs)
        if partner is not None:
            ratios.append(effective_wall(partner) / effective_wall(run))
            used.append((run, partner))
    if ratios:
        return statistics.median(ratios), noise(used)[0]
    if a.speedup is not None and b.speedup is not None and b.speedup > 0:
        return a.speedup / b.speedup, sorted(set(a.noisy + b.noisy))
    return None


def controls(rows: list[Row]) -> list[Row]:
    """Single-worker rows of a warm back-end: the same work as serial, so the measurement's own check."""
    return [r for r in rows if r.workers == 1 and not r.is_baseline and r.speedup is not None
            and all(run.get("window") != "cold" for run in r.runs)]


def control_failures(rows: list[Row]) -> list[str]:
    low, high = CONTROL_BAND
    return [f"{r.name} ran at {r.speedup:.2f}x serial's speed" for r in controls(rows)
            if not low <= r.speedup <= high]


def _chunk(record: Mapping[str, Any]) -> str:
    return str(record.get("chunksize_label", record.get("chunksize")))


def _params(record: Mapping[str, Any]) -> dict[str, Any]:
    """Every param the run had, at the configuration's size (a sample ran smaller, and says so)."""
    return {**record["params"], **(record.get("cell_params") or {})}


def _varied(params: list[dict[str, Any]]) -> list[str]:
    keys = sorted({k for p in params for k in p})
    return [k for k in keys if len({json.dumps(p.get(k), default=repr) for p in params}) > 1]


def _spread(values: list[float]) -> float | None:
    values = [v for v in values if v > 0]
    return max(values) / min(values) - 1 if len(values) > 1 else None


def _lowest(values: Any) -> float | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


@dataclass
class Evidence:
    """An experiment's measurements, as the claims read them."""

    task: str
    params: dict[str, Any]  # what ran (the experiment's params, every field)
    rows: list[Row]
    results: list[dict[str, Any]]  # rows a task returned (ipc, gil), medians over repeats
    document: dict[str, Any]

    def row(self, backend: str, workers: int | None = None, chunksize: str | None = None) -> Row | None:
        """The plain (default options) row of `backend`; with `workers` None, the one with the most."""
        found = [r for r in self.rows if r.label == backend and (workers is None or r.workers == workers)
                 and (chunksize is None or r.chunksize == str(chunksize))]
        return max(found, key=lambda r: r.workers) if found else None

    def result(self, **match: Any) -> dict[str, Any] | None:
        found = [r for r in self.results if all(r.get(k) == v for k, v in match.items())]
        return found[0] if found else None


def result_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tasks that return a list of measurement rows: each row's numbers as medians over repeats."""
    lists = [r["result"] for r in records if isinstance(r["result"], list) and r["result"]
             and all(isinstance(x, dict) for x in r["result"])]
    if not lists:
        return []
    merged = []
    for position, row in enumerate(lists[0]):
        same = [rows[position] for rows in lists if len(rows) > position]
        merged.append({k: statistics.median(s[k] for s in same)
                       if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                       for k, v in row.items()})
    return merged


__all__ = ["BASELINE", "CONTROL_BAND", "DRIFT", "GAP", "HEADROOM", "Evidence", "Row", "control_failures",
           "controls", "effective_wall", "faster", "nearest", "noise", "result_rows", "rows_of"]
