"""The document's figures beside ours: which document run a row stands for, and a row's table cells.

The document's time is set beside ours only where both ran the same size; where the batch file names a
unit of work (`document.unit`) and the sizes differ, both are shown per unit; otherwise it is shown as
not compared. A printed result goes through the task's own check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._claims import Judgement
from ._evidence import Evidence, Row
from ._registry import load_task
from ._validate import build

HEADERS = ["configuration", "workers", "chunksize", "params", "runs", "median s (min-max)", "per unit",
           "document", "speed-up", "document speed-up", "efficiency", "headroom", "start-up s", "memory MB",
           "result", "check", "document result", "noisy"]
CLAIM_HEADERS = ["claim", "the document", "predicate", "verdict", "noisy"]


def document_run(row: Row, evidence: Evidence) -> dict[str, Any] | None:
    """The document's figure for this row's configuration (same back-end; its most-workers row)."""
    for run in evidence.document.get("runs") or []:
        same = [r for r in evidence.rows if r.label == run.get("backend")
                and ("chunksize" not in run or r.chunksize == str(run["chunksize"]))]
        exact = [r for r in same if r.workers == run.get("workers")]
        pool = exact or same
        if pool and max(pool, key=lambda r: r.workers) is row:
            return run
    return None


def per_unit(seconds: float, params: Mapping[str, Any], unit: Mapping[str, Any]) -> float | None:
    amount = params.get(unit["param"])
    return seconds / (amount / unit.get("per", 1)) if amount else None


def compare_mode(evidence: Evidence) -> str:
    doc = evidence.document
    doc_params = doc.get("params") or {}
    if not doc_params:  # the document's size is unknown: its times cannot be set beside ours
        return "none"
    if all(evidence.params.get(k) == v for k, v in doc_params.items()):
        return "size"
    return "unit" if "unit" in doc else "none"


def row_cells(row: Row, ev: Evidence) -> list[str]:
    run = document_run(row, ev)
    mode = compare_mode(ev)
    unit = ev.document.get("unit")
    ours_unit = per_unit(row.median, row.params, unit) if unit and mode == "unit" else None
    doc_text = doc_speed = ""
    if run and "seconds" in run:
        workers = f" ({run.get('workers', 1)} workers)" if run.get("workers", 1) != row.workers else ""
        if mode == "size":
            doc_text = f"{run['seconds']:g} s{workers}"
        elif mode == "unit":
            doc_unit = per_unit(run["seconds"], ev.document.get("params", {}), unit)
            doc_text = f"{doc_unit:.3g} s per {unit['name']}{workers}" if doc_unit else ""
        else:
            doc_text = f"{run['seconds']:g} s at its own size (not compared){workers}"
        serial = next((r["seconds"] for r in ev.document.get("runs") or []
                       if r.get("backend") == "serial" and "seconds" in r), None)
        if serial and run.get("backend") != "serial":
            doc_speed = f"{serial / run['seconds']:.2f}x{workers}"
    doc_result = f"{run['result']!r} ({_printed_check(run, ev)})" if run and "result" in run else ""
    median = f"{row.median:.3g} ({min(row.walls):.3g}-{max(row.walls):.3g})"
    if row.sample:
        median += f", extrapolated from {row.sample['items']:,} items"
    return [row.label, str(row.workers), row.chunksize, params_text(row.given), str(len(row.runs)), median,
            "" if ours_unit is None else f"{ours_unit:.3g} s per {unit['name']}", doc_text,
            _num(row.speedup, "x"), doc_speed,
            "" if row.efficiency is None else f"{row.efficiency:.0%}",
            "" if row.headroom is None else f"{row.headroom:.2f}", f"{row.startup:.3f}",
            "" if row.memory_mb is None else f"{row.memory_mb:,.1f}", _short(row.result),
            {True: "ok", False: "FAILED", None: "-"}[row.check["ok"]], doc_result, "; ".join(row.noisy)]


def _printed_check(run: Mapping[str, Any], ev: Evidence) -> str:
    task = load_task(ev.task)
    verdict = task.verify(run["result"], build(task.params, ev.document.get("params", {}), "document.params"))
    return {True: "ok", False: f"wrong: {verdict.detail}", None: "unchecked"}[verdict.ok]


def params_text(params: Mapping[str, Any]) -> str:
    parts = []
    for key, value in params.items():
        if isinstance(value, bool) or not isinstance(value, (int, list)):
            parts.append(f"{key}={value}")
        elif isinstance(value, int):
            parts.append(f"{key}={value:,}")
        else:
            parts.append(f"{key}=[{len(value)} values]" if len(str(value)) > 40 else f"{key}={value}")
    return ", ".join(parts)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6f}"
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return f"{len(value)} rows (below)"
    text = repr(value)
    return text if len(text) <= 30 else text[:27] + "..."


def _num(value: float | None, suffix: str = "") -> str:
    if value is None:
        return ""
    return f"{value:.2f}{suffix}" if abs(value) < 1000 else f"{value:,.0f}{suffix}"


def plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def claim_cells(j: Judgement) -> list[str]:
    c = j.claim
    return [f"{c.says} [{c.id}]", f"{c.where}: \"{c.original}\"",
            f"{c.predicate} {c.direction} {c.threshold:g}", j.text, "; ".join(j.noisy)]


__all__ = ["CLAIM_HEADERS", "HEADERS", "claim_cells", "compare_mode", "document_run", "params_text",
           "per_unit", "plain", "row_cells"]
