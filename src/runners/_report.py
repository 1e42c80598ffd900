"""The comparison report: results.jsonl -> tables (terminal, Markdown, CSV), plots, report.html, verdicts.

Per experiment, one row per configuration (`_evidence`): the median time over its runs with min-max,
its paired speed-up against the serial baseline, efficiency = speed-up / workers, the lowest headroom
measured beside its runs, and why a ratio is noisy if it is. The document's figure for a configuration
sits in a column beside ours: its time where it ran the same size, its time per unit of work where the
batch file names one and the sizes differ. Every claim the experiment judges gets a verdict
(`_claims`), and the single-worker rows are the measurement's own check.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._batch import META, PLOTS, write_text
from ._claims import BY_ID, Judgement, judge
from ._errors import RunnersError
from ._evidence import (
    CONTROL_BAND,
    DRIFT,
    HEADROOM,
    Evidence,
    Row,
    control_failures,
    controls,
    result_rows,
    rows_of,
)
from ._html import html
from ._registry import load_task
from ._results import RESULTS, read_results
from ._sysinfo import describe_system
from ._validate import build

HEADERS = ["configuration", "workers", "chunksize", "params", "runs", "median s (min-max)", "per unit",
           "document", "speed-up", "document speed-up", "efficiency", "headroom", "start-up s", "result",
           "check", "document result", "noisy"]
CLAIM_HEADERS = ["claim", "the document", "predicate", "verdict", "noisy"]


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Experiment:
    name: str
    title: str
    ran: str  # the params that ran, and how they relate to the document's
    evidence: Evidence
    judgements: list[Judgement]
    table: Table
    checks: list[str]  # the measurement's own check: the single-worker controls
    notes: list[str]
    plots: list[str] = field(default_factory=list)

    @property
    def rows(self) -> list[Row]:
        return self.evidence.rows

    @property
    def results(self) -> list[dict[str, Any]]:
        return self.evidence.results


@dataclass
class Report:
    title: str
    header: list[str]
    experiments: list[Experiment]
    notes: list[str]
    markdown: str = ""

    @property
    def tables(self) -> list[Table]:
        return [e.table for e in self.experiments]


def make_report(out_dir: str | Path, plots: bool = True) -> Report:
    """Build the report of a batch's output folder; writes report.md, report.csv, report.html and plots/."""
    out = Path(out_dir)
    records = read_results(out / RESULTS)
    try:
        meta = json.loads((out / META).read_text(encoding="utf-8")) if (out / META).exists() else {}
    except (OSError, ValueError) as exc:
        raise RunnersError(f"{out / META}: not a batch description ({exc}); rerun the batch") from None
    described = {e["name"]: e for e in meta.get("experiments", [])}
    order = list(described) + sorted({r["experiment"] for r in records} - set(described))
    experiments = []
    for name in order:
        mine = [r for r in records if r["experiment"] == name]
        if mine:
            experiments.append(_experiment(name, mine, described.get(name, {}), meta.get("profile", "full")))
    title = f"{meta.get('name', out.name)} ({meta.get('profile', 'full')} profile)"
    header = (describe_system(meta["system"]) if "system" in meta else []) + _machine_state(records, meta)
    notes = [f"skipped {s['backend']} x{s['workers']} in {s['experiment']}: {s['reason']}"
             for s in meta.get("skipped", [])] + list(meta.get("notes", []))
    report = Report(title, header, experiments, notes)
    if plots:
        _draw(report, out)
    report.markdown = markdown(report)
    write_text(out / "report.md", report.markdown)
    write_text(out / "report.csv", _csv(report))
    write_text(out / "report.html", html(report, out))
    return report


def _draw(report: Report, out: Path) -> None:
    try:
        from ._plots import draw  # matplotlib is imported only when plots are asked for
    except ImportError:
        report.notes.append("no plots: matplotlib is not installed (pip install 'runners[report]')")
        return
    folder = out / PLOTS
    try:
        folder.mkdir(exist_ok=True)
        for old in folder.glob("*.png"):  # the folder is the report's: no stale pictures
            old.unlink()
        for exp in report.experiments:
            exp.plots = [f"{PLOTS}/{name}" for name in draw(exp, folder)]
    except OSError as exc:
        raise RunnersError(f"{folder}: cannot write the plots ({exc.strerror or exc})") from None


def _experiment(name: str, records: list[dict[str, Any]], described: Mapping[str, Any],
                profile: str) -> Experiment:
    rows = rows_of(records)
    params = described.get("params") or rows[0].params
    document = described.get("document") or {}
    evidence = Evidence(rows[0].task, params, rows, result_rows(records), document)
    judgements = [judge(BY_ID[c], evidence) for c in document.get("claims") or [] if c in BY_ID]
    table = Table(described.get("title", name), HEADERS, [_cells(r, evidence) for r in rows])
    checks = []
    if controls(rows):
        failures = control_failures(rows)
        low, high = CONTROL_BAND
        checks.append(f"the machine was noisy during this experiment: {'; '.join(failures)} (one worker "
                      f"does serial's work, so it should run at {low:g}-{high:g}x)" if failures else
                      f"single-worker controls within {low:g}-{high:g}x of serial: "
                      + ", ".join(f"{r.name} {r.speedup:.2f}x" for r in controls(rows)))
    notes = [str(document["note"])] if document.get("note") else []
    sampled = [r for r in rows if r.sample]
    notes += [f"{r.name}: ran on a sample of {r.sample['items']:,} of {r.sample['of']:,} items; its time is "
              f"extrapolated by items ({r.sample['of'] / r.sample['items']:,.0f}x), as this cost grows with "
              "them" for r in sampled]
    return Experiment(name, table.title, _ran(params, document, profile, described), evidence, judgements,
                      table, checks, notes)


def _ran(params: Mapping[str, Any], document: Mapping[str, Any], profile: str,
         described: Mapping[str, Any]) -> str:
    text = f"ran {_params(params)} ({profile} profile, {described.get('repeats', '?')} repeat(s))"
    doc_params = document.get("params") or {}
    if doc_params:
        same = all(params.get(k) == v for k, v in doc_params.items())
        text += ("; the document's size" if same else f"; the document ran {_params(doc_params)}: its "
                 + ("times are compared per " + document["unit"]["name"] if "unit" in document
                    else "times are not compared with ours"))
    return text


def _machine_state(records: list[dict[str, Any]], meta: Mapping[str, Any]) -> list[str]:
    lines = [f"Run order: {meta['order']}."] if meta.get("order") else []
    rooms = [r["headroom"] for r in records if r.get("headroom") is not None]
    if rooms:
        lines.append(f"2-process headroom beside each round: {min(rooms):.2f}-{max(rooms):.2f} (median "
                     f"{statistics.median(rooms):.2f}; 2.0 is an idle 2-core machine). A ratio is marked "
                     f"noisy when its baseline drifted over {DRIFT:.0%} or headroom was below {HEADROOM:g}.")
    return lines


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


def _compare_mode(evidence: Evidence) -> str:
    doc = evidence.document
    doc_params = doc.get("params") or {}
    if not doc_params:  # the document's size is unknown: its times cannot be set beside ours
        return "none"
    if all(evidence.params.get(k) == v for k, v in doc_params.items()):
        return "size"
    return "unit" if "unit" in doc else "none"


def _cells(row: Row, ev: Evidence) -> list[str]:
    run = document_run(row, ev)
    mode = _compare_mode(ev)
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
    return [row.label, str(row.workers), row.chunksize, _params(row.given), str(len(row.runs)), median,
            "" if ours_unit is None else f"{ours_unit:.3g} s per {unit['name']}", doc_text,
            _num(row.speedup, "x"), doc_speed,
            "" if row.efficiency is None else f"{row.efficiency:.0%}",
            "" if row.headroom is None else f"{row.headroom:.2f}", f"{row.startup:.3f}", _short(row.result),
            {True: "ok", False: "FAILED", None: "-"}[row.check["ok"]], doc_result, "; ".join(row.noisy)]


def _printed_check(run: Mapping[str, Any], ev: Evidence) -> str:
    task = load_task(ev.task)
    verdict = task.verify(run["result"], build(task.params, ev.document.get("params", {}), "document.params"))
    return {True: "ok", False: f"wrong: {verdict.detail}", None: "unchecked"}[verdict.ok]


def _params(params: Mapping[str, Any]) -> str:
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


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    keep = [i for i, _ in enumerate(headers) if any(row[i] for row in rows)]
    lines = ["| " + " | ".join(headers[i] for i in keep) + " |", "|" + "---|" * len(keep)]
    return lines + ["| " + " | ".join(row[i].replace("|", "/") for i in keep) + " |" for row in rows]


def markdown(report: Report) -> str:
    lines = [f"# Report: {report.title}", ""] + [f"- {h}" for h in report.header] + [""]
    for exp in report.experiments:
        lines += [f"## {exp.title}", "", exp.ran + ".", ""]
        lines += _md_table(exp.table.headers, exp.table.rows) + [""]
        if exp.results:
            keys = list(exp.results[0])
            lines += _md_table(keys, [[plain(row.get(k)) for k in keys] for row in exp.results]) + [""]
        if exp.judgements:
            lines += ["**The document's claims, judged here**", ""]
            lines += _md_table(CLAIM_HEADERS, [claim_cells(j) for j in exp.judgements]) + [""]
        lines += [f"- {c}" for c in exp.checks + exp.notes] + [""]
        lines += [f"![{p}]({p})" for p in exp.plots] + [""]
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    return "\n".join(lines)


CSV_HEADERS = ["experiment", "configuration", "backend", "workers", "chunksize", "params", "runs", "median_s",
               "min_s", "max_s", "per_unit_s", "unit", "document_s", "document_per_unit_s",
               "document_workers", "document_result", "speedup", "document_speedup", "efficiency",
               "headroom_min", "startup_s", "result", "check", "sample_items", "noisy"]


def _csv(report: Report) -> str:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(CSV_HEADERS)
    for exp in report.experiments:
        ev = exp.evidence
        unit = ev.document.get("unit")
        mode = _compare_mode(ev)
        serial = next((r["seconds"] for r in ev.document.get("runs") or []
                       if r.get("backend") == "serial" and "seconds" in r), None)
        for row in exp.rows:
            run = document_run(row, ev) or {}
            ours_unit = per_unit(row.median, row.params, unit) if unit and mode == "unit" else None
            doc_unit = per_unit(run["seconds"], ev.document.get("params", {}), unit) \
                if unit and mode == "unit" and "seconds" in run else None
            doc_speed = (serial / run["seconds"] if serial and "seconds" in run and not row.is_baseline
                         else None)
            writer.writerow([
                exp.name, row.name, row.backend, row.workers, row.chunksize,
                json.dumps(row.params, default=repr),
                len(row.runs), f"{row.median:.6f}", f"{min(row.walls):.6f}", f"{max(row.walls):.6f}",
                _fmt(ours_unit), unit["name"] if unit and mode == "unit" else "",
                run.get("seconds", "") if mode == "size" else "", _fmt(doc_unit), run.get("workers", ""),
                json.dumps(run["result"]) if "result" in run else "", _fmt(row.speedup), _fmt(doc_speed),
                _fmt(row.efficiency), _fmt(row.headroom), f"{row.startup:.6f}",
                json.dumps(row.result, default=repr), row.check["ok"],
                row.sample["items"] if row.sample else "", "; ".join(row.noisy)])
    return text.getvalue()


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def print_report(report: Report, echo: Callable[[str], None] = print) -> None:
    """The report on a terminal: rich tables when rich is installed, plain Markdown otherwise."""
    try:
        from rich.console import Console
        from rich.table import Table as RichTable
    except ImportError:
        echo(report.markdown)
        return
    console = Console(width=None if sys.stdout.isatty() else 200)

    def show(title: str, headers: list[str], rows: list[list[str]]) -> None:
        shown = RichTable(title=title, title_justify="left")
        keep = [i for i, _ in enumerate(headers) if any(row[i] for row in rows)]
        for i in keep:
            shown.add_column(headers[i], overflow="fold")
        for row in rows:
            shown.add_row(*(row[i] for i in keep))
        console.print(shown)

    console.print(f"Report: {report.title}", markup=False)
    for line in report.header:
        console.print(line, markup=False)
    for exp in report.experiments:
        show(exp.title, exp.table.headers, exp.table.rows)
        console.print(f"  {exp.ran}.", markup=False)
        if exp.results:
            keys = list(exp.results[0])
            show("", keys, [[plain(row.get(k)) for k in keys] for row in exp.results])
        if exp.judgements:
            show("The document's claims, judged here", CLAIM_HEADERS,
                 [claim_cells(j) for j in exp.judgements])
        for line in exp.checks + exp.notes:
            console.print(f"  - {line}", markup=False)
    for note in report.notes:
        console.print(f"note: {note}", markup=False)
