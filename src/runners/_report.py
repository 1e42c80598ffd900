"""The comparison report: results.jsonl -> tables (terminal, Markdown, CSV), PNG plots, document check.

Per experiment, one row per (back-end, workers, chunksize, params): median wall time over repeats with
min-max, speedup against the serial run of the same params, efficiency = speedup / workers. Where the
batch file quotes the source document's figures, they stand beside the measured ones, and each printed
result is put through the task's own independent check.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._batch import META, RESULTS, read_results
from ._registry import load_task
from ._sysinfo import describe_system
from ._validate import build

HEADERS = ["back-end", "workers", "chunksize", "params", "runs", "median s", "min-max s", "speedup",
           "efficiency", "start-up s", "result", "check"]


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Experiment:
    name: str
    title: str
    rows: list[dict[str, Any]]
    results: list[dict[str, Any]]  # rows a task returned (ipc, gil), medians over repeats
    findings: list[str]  # the document beside this machine, in sentences
    plots: list[str] = field(default_factory=list)


@dataclass
class Report:
    header: list[str]
    experiments: list[Experiment]
    notes: list[str]
    tables: list[Table]
    markdown: str


def make_report(out_dir: str | Path, plots: bool = True) -> Report:
    """Build the report of a batch's output folder; writes report.md, report.csv and PNG plots there."""
    out = Path(out_dir)
    records = read_results(out / RESULTS)
    meta = json.loads((out / META).read_text(encoding="utf-8")) if (out / META).exists() else {}
    order = [e["name"] for e in meta.get("experiments", [])]
    order += sorted({r["experiment"] for r in records} - set(order))
    described = {e["name"]: e for e in meta.get("experiments", [])}
    experiments = []
    for name in order:
        mine = [r for r in records if r["experiment"] == name]
        if not mine:
            continue
        title = described.get(name, {}).get("title", name)
        exp = Experiment(name, title, _rows(mine), _result_rows(mine), [])
        exp.findings = _findings(exp, described.get(name, {}), meta.get("profile", "full"))
        if plots:
            exp.plots = _plots(exp, out)
        experiments.append(exp)
    header = describe_system(meta["system"]) if "system" in meta else []
    notes = [f"skipped {s['backend']} x{s['workers']} in {s['experiment']}: {s['reason']}"
             for s in meta.get("skipped", [])] + list(meta.get("notes", []))
    tables = [Table(e.title, HEADERS, [_cells(r) for r in e.rows]) for e in experiments]
    report = Report(header, experiments, notes, tables, "")
    report.markdown = _markdown(report, meta)
    (out / "report.md").write_text(report.markdown, encoding="utf-8")
    _csv(report, out / "report.csv")
    return report


def _rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        key = json.dumps([r["backend"], r["workers"], r.get("chunksize_label", r.get("chunksize")),
                          r["params"]], sort_keys=True, default=repr)
        groups.setdefault(key, []).append(r)
    varied = _varied([g[0]["params"] for g in groups.values()])
    rows = []
    for runs in groups.values():
        walls = [r["wall"] for r in runs]
        first = runs[-1]
        rows.append({
            "backend": first["backend"], "workers": first["workers"],
            "chunksize": str(first.get("chunksize_label", first.get("chunksize"))),
            "params": first["params"], "label": ", ".join(f"{k}={first['params'][k]}" for k in varied),
            "runs": len(runs), "median": statistics.median(walls), "min": min(walls), "max": max(walls),
            "startup": statistics.median(r.get("backend_startup", r["timings"]["startup"]) for r in runs),
            "result": first["result"], "check": first["check"], "task": first["task"],
        })
    for row in rows:
        base = [b for b in rows if b["backend"] == "serial" and b["params"] == row["params"]]
        base = base or sorted((b for b in rows if b["params"] == row["params"]), key=lambda b: b["workers"])
        reference = base[0]["median"]
        row["speedup"] = reference / row["median"] if row["median"] > 0 else None
        row["efficiency"] = row["speedup"] / row["workers"] if row["speedup"] is not None else None
    return rows


def _varied(params: list[dict[str, Any]]) -> list[str]:
    keys = sorted({k for p in params for k in p})
    return [k for k in keys if len({json.dumps(p.get(k), default=repr) for p in params}) > 1]


def _result_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
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


def _findings(exp: Experiment, described: Mapping[str, Any], profile: str) -> list[str]:
    """Sentences comparing the document's figures and claims with this machine's."""
    doc = described.get("document") or {}
    out: list[str] = []
    runs = doc.get("runs") or []
    doc_serial = next((r["seconds"] for r in runs if r.get("backend") == "serial" and "seconds" in r), None)
    for run in runs:
        label = run.get("label") or f"{run.get('backend')} x{run.get('workers', 1)}"
        row = _matching_row(exp.rows, run)
        if "result" in run:
            out.append(_result_finding(label, run["result"], exp, doc.get("params", {}), row))
        if "seconds" not in run:
            continue
        doc_speedup = doc_serial / run["seconds"] if doc_serial and run.get("backend") != "serial" else None
        if row is None:
            out.append(f"{label}: the document took {run['seconds']:g} s; not measured here.")
            continue
        measured = f"{row['median']:.4g} s" + (" (quick profile: smaller sizes)" * (profile == "quick"))
        if doc_speedup is None:
            out.append(f"{label}: the document took {run['seconds']:g} s; this machine {measured}.")
            continue
        ours, workers = row["speedup"], row["workers"]
        text = (f"{label}: the document took {run['seconds']:g} s, {doc_speedup:.2f}x vs serial with "
                f"{run.get('workers', '?')} workers (efficiency {doc_speedup / run.get('workers', 1):.0%}); "
                f"this machine {measured}, {ours:.2f}x with {workers} (efficiency {row['efficiency']:.0%})")
        if doc_speedup > 1.1 and ours <= 1.0:
            text += ". DISAGREES: the speed-up does not reproduce here."
        elif doc_speedup < 0.9 and ours >= 1.0:
            text += ". DISAGREES: the slow-down does not reproduce here."
        else:
            text += ". The effect reproduces" + (" (slower than serial, as the document says)."
                                                 if doc_speedup < 1 else ".")
        out.append(text)
    for claim in doc.get("claims") or []:
        out.append(_claim_finding(claim, exp))
    if doc.get("note"):
        out.append(str(doc["note"]))
    return out


def _matching_row(rows: list[dict[str, Any]], run: Mapping[str, Any]) -> dict[str, Any] | None:
    same = [r for r in rows if r["backend"] == run.get("backend")
            and ("chunksize" not in run or r["chunksize"] == str(run["chunksize"]))]
    exact = [r for r in same if r["workers"] == run.get("workers")]
    pool = exact or same
    return max(pool, key=lambda r: r["workers"]) if pool else None


def _result_finding(label: str, printed: Any, exp: Experiment, doc_params: Mapping[str, Any],
                    row: dict[str, Any] | None) -> str:
    task_name = exp.rows[0]["task"]
    task = load_task(task_name)
    verdict = task.verify(printed, build(task.params, doc_params, "document.params"))
    measured = f"; this run's result is {_short(row['result'])} ({row['check']['detail']})" if row else ""
    if verdict.ok is False:
        return (f"{label}: DISAGREES: the document printed {printed!r}, and that is wrong: "
                f"{verdict.detail} for the same parameters{measured}.")
    return f"{label}: the document printed {printed!r}; it passes the task's check ({verdict.detail})."


def _observations(exp: Experiment) -> list[dict[str, Any]]:
    table = [{"backend": r["backend"], "workers": r["workers"], "chunksize": r["chunksize"], **r["params"],
              "wall": r["median"], "speedup": r["speedup"]} for r in exp.rows]
    return table + exp.results


def _select(observations: list[dict[str, Any]], selector: Mapping[str, Any], metric: str) -> float | None:
    values = [o[metric] for o in observations if metric in o and o[metric] is not None
              and all(str(o.get(k)) == str(v) for k, v in selector.items())]
    return statistics.median(values) if values else None


def _claim_finding(claim: Mapping[str, Any], exp: Experiment) -> str:
    text = claim["text"]
    observations = _observations(exp)
    if "differs" in claim:
        spec = claim["differs"]
        value = _select(observations, spec.get("row", {}), spec["field"])
        other = _select(observations, spec.get("row", {}), spec["from"])
        if value is None or other is None:
            return f'The document says "{text}": not measured here.'
        if value != other:
            return f'The document says "{text}": holds here ({spec["field"]} {value:,.0f}, not {other:,.0f}).'
        return (f'The document says "{text}": DISAGREES: this interpreter gives exactly {other:,.0f} '
                f'({spec["field"]} = {spec["from"]}).')
    metric = claim.get("metric", "wall")
    higher = claim.get("higher_is_better", metric not in ("wall", "seconds"))
    by = float(claim.get("by", 1.0))
    good = _select(observations, claim.get("better", {}), metric)
    bad = _select(observations, claim.get("worse", {}), metric)
    if good is None or bad is None or min(good, bad) <= 0:
        return f'The document says "{text}": not measured here.'
    ratio = good / bad if higher else bad / good
    verdict = "holds here" if ratio >= by else "DISAGREES here"
    return (f'The document says "{text}": {verdict} ({metric} {_num(good)} vs {_num(bad)}, '
            f"a factor of {ratio:.2f}{f'; the claim needs {by:g}' if by != 1 else ''}).")


def _plots(exp: Experiment, out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")  # headless: files only
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    parallel = [r for r in exp.rows if r["backend"] != "serial" and r["speedup"] is not None]
    if len({r["workers"] for r in parallel}) > 1:
        fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
        top = max(r["workers"] for r in parallel)
        ax.plot([1, top], [1, top], "k--", label="ideal")
        for series in sorted({(r["backend"], r["label"], r["chunksize"]) for r in parallel}):
            points = sorted((r["workers"], r["speedup"]) for r in parallel
                            if (r["backend"], r["label"], r["chunksize"]) == series)
            name = " ".join(s for s in series if s and s != "auto")
            ax.plot(*zip(*points, strict=True), "o-", label=name)
        ax.set(xlabel="workers", ylabel="speedup vs serial", title=f"{exp.title}: speedup")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        made.append(_save(fig, out / f"speedup-{exp.name}.png", plt))
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(exp.rows) + 1.5), dpi=100)
    labels = [_row_name(r) for r in exp.rows]
    medians = [r["median"] for r in exp.rows]
    spread = [[r["median"] - r["min"] for r in exp.rows], [r["max"] - r["median"] for r in exp.rows]]
    ax.barh(labels, medians, xerr=spread, color="tab:blue", capsize=3)
    ax.invert_yaxis()
    ax.set(xlabel="median wall time, s (bars: min-max)", title=f"{exp.title}: time")
    ax.grid(axis="x", alpha=0.3)
    made.append(_save(fig, out / f"times-{exp.name}.png", plt))
    return made


def _save(fig: Any, path: Path, plt: Any) -> str:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name


def _row_name(r: dict[str, Any]) -> str:
    parts = [r["backend"], f"x{r['workers']}"]
    if r["chunksize"] != "auto":
        parts.append(f"chunk {r['chunksize']}")
    if r["label"]:
        parts.append(r["label"])
    return " ".join(parts)


def _cells(r: dict[str, Any]) -> list[str]:
    return [r["backend"], str(r["workers"]), r["chunksize"], r["label"], str(r["runs"]),
            f"{r['median']:.4f}", f"{r['min']:.4f}-{r['max']:.4f}", _num(r["speedup"], "x"),
            "" if r["efficiency"] is None else f"{r['efficiency']:.0%}", f"{r['startup']:.3f}",
            _short(r["result"]), {True: "ok", False: "FAILED", None: "-"}[r["check"]["ok"]]]


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


def _md_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]


def _markdown(report: Report, meta: Mapping[str, Any]) -> str:
    lines = [f"# Report: {meta.get('name', 'batch')} ({meta.get('profile', 'full')} profile)", ""]
    lines += [f"- {h}" for h in report.header] + [""]
    for exp, table in zip(report.experiments, report.tables, strict=True):
        lines += [f"## {exp.title}", ""] + _md_table(table.headers, table.rows) + [""]
        if exp.results:
            keys = list(exp.results[0])
            lines += _md_table(keys, [[_plain(row.get(k)) for k in keys] for row in exp.results]) + [""]
        if exp.findings:
            lines += ["**The document vs this machine**", ""] + [f"- {f}" for f in exp.findings] + [""]
        lines += [f"![{p}]({p})" for p in exp.plots] + [""]
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    return "\n".join(lines)


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def _csv(report: Report, path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["experiment", "backend", "workers", "chunksize", "params", "runs", "median_s",
                         "min_s", "max_s", "speedup", "efficiency", "startup_s", "result", "check"])
        for exp in report.experiments:
            for r in exp.rows:
                writer.writerow([exp.name, r["backend"], r["workers"], r["chunksize"],
                                 json.dumps(r["params"], default=repr), r["runs"], f"{r['median']:.6f}",
                                 f"{r['min']:.6f}", f"{r['max']:.6f}", _fmt(r["speedup"]),
                                 _fmt(r["efficiency"]), f"{r['startup']:.6f}",
                                 json.dumps(r["result"], default=repr), r["check"]["ok"]])


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
    console = Console(width=None if sys.stdout.isatty() else 180)
    for line in report.header:
        console.print(line, markup=False)
    for exp, table in zip(report.experiments, report.tables, strict=True):
        shown = RichTable(title=exp.title, title_justify="left")
        keep = [i for i, h in enumerate(table.headers) if any(row[i] for row in table.rows)]
        for i in keep:
            shown.add_column(table.headers[i], overflow="fold")
        for row in table.rows:
            shown.add_row(*(row[i] for i in keep))
        console.print(shown)
        if exp.results:
            extra = RichTable(show_header=True)
            for key in exp.results[0]:
                extra.add_column(key)
            for row in exp.results:
                extra.add_row(*(_plain(row.get(k)) for k in exp.results[0]))
            console.print(extra)
        for finding in exp.findings:
            console.print(f"  - {finding}", markup=False)
    for note in report.notes:
        console.print(f"note: {note}", markup=False)
