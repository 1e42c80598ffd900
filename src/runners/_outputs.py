"""The report's text outputs: report.md, report.csv and the terminal's tables.

An experiment with parts is one section: its summary table (`_summary`), what to use when, and then
each part as a subsection."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._document import CLAIM_HEADERS, claim_cells, compare_mode, document_run, per_unit, plain

if TYPE_CHECKING:
    from ._report import Experiment, Report
    from ._summary import Summary


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    keep = [i for i, _ in enumerate(headers) if any(row[i] for row in rows)]
    lines = ["| " + " | ".join(headers[i] for i in keep) + " |", "|" + "---|" * len(keep)]
    return lines + ["| " + " | ".join(row[i].replace("|", "/") for i in keep) + " |" for row in rows]


def summary_first(report: Report, exp: Experiment, shown: set[str]) -> Summary | None:
    """The summary to show before `exp`: its section's, the first time one of its parts comes."""
    if not exp.section or exp.section in shown or exp.section not in report.summaries:
        return None
    shown.add(exp.section)
    return report.summaries[exp.section]


ADVICE = "What to use when, on this machine (from the cells above)"


def _summary_md(summary: Summary) -> list[str]:
    lines = [f"## {summary.title}", ""] + _md_table(summary.headers, summary.rows) + [""]
    lines += [f"**{ADVICE}:** {summary.advice}", ""] + [f"- {line}" for line in summary.lines]
    return lines + [""] + [f"![{p}]({p})" for p in summary.plots] + [""]


def markdown(report: Report) -> str:
    lines = [f"# Report: {report.title}", ""] + [f"- {h}" for h in report.header] + [""]
    shown: set[str] = set()
    for exp in report.experiments:
        summary = summary_first(report, exp, shown)
        if summary is not None:
            lines += _summary_md(summary)
        lines += [f"{'###' if exp.section else '##'} {exp.title}", "", exp.ran + ".", ""]
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
               "headroom_min", "startup_s", "result", "check", "sample_items", "noisy", "memory_mb"]
# A summary table's cells, one line each: experiment = the section, configuration = the approach.
SUMMARY_CSV = ["measure", "value", "measure_unit", "document_words", "verdict"]


def csv_text(report: Report) -> str:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(CSV_HEADERS + SUMMARY_CSV)
    for section, summary in report.summaries.items():
        for m in summary.measures:
            writer.writerow([section, m["approach"]] + [""] * (len(CSV_HEADERS) - 2)
                            + [m["measure"], "" if m["value"] is None else f"{m['value']:.6g}", m["unit"],
                               m["document"], m["verdict"]])
    for exp in report.experiments:
        ev = exp.evidence
        unit = ev.document.get("unit")
        mode = compare_mode(ev)
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
                row.sample["items"] if row.sample else "", "; ".join(row.noisy),
                _fmt(row.memory_mb)] + [""] * len(SUMMARY_CSV))
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
    shown: set[str] = set()
    for exp in report.experiments:
        summary = summary_first(report, exp, shown)
        if summary is not None:
            show(summary.title, summary.headers, summary.rows)
            console.print(f"  {ADVICE}: {summary.advice}", markup=False)
            for line in summary.lines:
                console.print(f"  - {line}", markup=False)
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


__all__ = ["csv_text", "markdown", "print_report"]
