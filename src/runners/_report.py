"""The comparison report: results.jsonl -> tables (terminal, Markdown, CSV), plots, report.html, verdicts.

Per experiment, one row per configuration (`_evidence`): the median time over its runs with min-max,
its paired speed-up against the serial baseline, efficiency = speed-up / workers, the lowest headroom
measured beside its runs, and why a ratio is noisy if it is. The document's figure for a configuration
sits in a column beside ours: its time where it ran the same size, its time per unit of work where the
batch file names one and the sizes differ. Every claim the experiment judges gets a verdict
(`_claims`), and the single-worker rows are the measurement's own check.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._claims import BY_ID, Judgement, judge
from ._document import HEADERS, params_text, row_cells
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
from ._matrix_run import META, PLOTS, write_text
from ._outputs import csv_text, markdown, print_report
from ._results import RESULTS, read_results
from ._summary import Summary, build
from ._sysinfo import describe_system


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
    section: str = ""  # the experiment (with parts) this one is a part of
    part: str = ""

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
    summaries: dict[str, Summary] = field(default_factory=dict)  # by section: its parts' table

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
    report = Report(title, header, experiments, notes, summaries=_summaries(experiments, described))
    if plots:
        _draw(report, out)
    report.markdown = markdown(report)
    write_text(out / "report.md", report.markdown)
    write_text(out / "report.csv", csv_text(report))
    write_text(out / "report.html", html(report, out))
    return report


def _summaries(experiments: list[Experiment], described: Mapping[str, Any]) -> dict[str, Summary]:
    """The table of each experiment with parts, from the parts that have results."""
    sections: dict[str, dict[str, Experiment]] = {}
    for exp in experiments:
        if exp.section:
            sections.setdefault(exp.section, {})[exp.part] = exp
    return {name: build(described[next(iter(parts.values())).name].get("section_title", name), parts)
            for name, parts in sections.items()}


def _draw(report: Report, out: Path) -> None:
    try:
        from ._plots import draw, draw_summary  # matplotlib is imported only when plots are asked for
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
        for section, summary in report.summaries.items():
            summary.plots = [f"{PLOTS}/{name}" for name in draw_summary(section, summary, folder)]
    except OSError as exc:
        raise RunnersError(f"{folder}: cannot write the plots ({exc.strerror or exc})") from None


def _experiment(name: str, records: list[dict[str, Any]], described: Mapping[str, Any],
                profile: str) -> Experiment:
    rows = rows_of(records)
    params = described.get("params") or rows[0].params
    document = described.get("document") or {}
    evidence = Evidence(rows[0].task, params, rows, result_rows(records), document)
    judgements = [judge(BY_ID[c], evidence) for c in document.get("claims") or [] if c in BY_ID]
    table = Table(described.get("title", name), HEADERS, [row_cells(r, evidence) for r in rows])
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
                      table, checks, notes, section=described.get("section", ""),
                      part=described.get("part", ""))


def _ran(params: Mapping[str, Any], document: Mapping[str, Any], profile: str,
         described: Mapping[str, Any]) -> str:
    text = f"ran {params_text(params)} ({profile} profile, {described.get('repeats', '?')} repeat(s))"
    doc_params = document.get("params") or {}
    if doc_params:
        same = all(params.get(k) == v for k, v in doc_params.items())
        text += ("; the document's size" if same else f"; the document ran {params_text(doc_params)}: its "
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


__all__ = ["Experiment", "Report", "Table", "make_report", "markdown", "print_report"]
