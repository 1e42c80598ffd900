"""report.html: the whole report in one file (tables, verdicts, plots inlined), opened with no server."""

from __future__ import annotations

import base64
import html as escape
from pathlib import Path
from typing import TYPE_CHECKING

from ._document import CLAIM_HEADERS, claim_cells, plain
from ._outputs import ADVICE, summary_first

if TYPE_CHECKING:
    from ._report import Report

STYLE = """
body { font: 14px/1.45 system-ui, "Noto Sans CJK TC", sans-serif; margin: 2em auto; max-width: 110em;
       padding: 0 1em; color: #222; }
.wide { overflow-x: auto; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.holds { color: #176317; font-weight: 600; } .DISAGREES { color: #a11; font-weight: 600; }
.notjudged { color: #666; } .noisy { color: #a05a00; }
img { max-width: 100%; display: block; margin: 0.8em 0; border: 1px solid #eee; }
.ran { color: #555; }
"""


def html(report: Report, out: Path) -> str:

    """The page; images are read from `out` and inlined as data URIs."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>Report: {_e(report.title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>Report: {_e(report.title)}</h1>", "<ul>"]
    parts += [f"<li>{_e(line)}</li>" for line in report.header] + ["</ul>"]
    shown: set[str] = set()
    for exp in report.experiments:
        summary = summary_first(report, exp, shown)
        if summary is not None:
            parts += [f'<section id="{_e(exp.section)}"><h2>{_e(summary.title)}</h2>',
                      _table(summary.headers, summary.rows, "summary", verdict_column=(2, 4, 6)),
                      f"<p><strong>{_e(ADVICE)}:</strong> {_e(summary.advice)}</p>"]
            parts += ["<ul>"] + [f"<li>{_e(line)}</li>" for line in summary.lines] + ["</ul>"]
            parts += [_image(out, plot) for plot in summary.plots] + ["</section>"]
        heading = "h3" if exp.section else "h2"
        parts += [f'<section id="{_e(exp.name)}"><{heading}>{_e(exp.title)}</{heading}>',
                  f'<p class="ran">{_e(exp.ran)}.</p>']
        parts.append(_table(exp.table.headers, exp.table.rows, "configurations"))
        if exp.results:
            keys = list(exp.results[0])
            parts.append(_table(keys, [[plain(r.get(k)) for k in keys] for r in exp.results], "measurements"))
        if exp.judgements:
            parts.append("<h3>The document's claims, judged here</h3>")
            parts.append(_table(CLAIM_HEADERS, [claim_cells(j) for j in exp.judgements], "claims",
                                verdict_column=(3,)))
        if exp.checks or exp.notes:
            parts += ["<ul>"] + [f"<li>{_e(line)}</li>" for line in exp.checks + exp.notes] + ["</ul>"]
        parts += [_image(out, plot) for plot in exp.plots]
        parts.append("</section>")
    if report.notes:
        parts += ["<h2>Notes</h2><ul>"] + [f"<li>{_e(n)}</li>" for n in report.notes] + ["</ul>"]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _image(out: Path, plot: str) -> str:
    data = base64.b64encode((out / plot).read_bytes()).decode()
    return f'<img alt="{_e(plot)}" src="data:image/png;base64,{data}">'


def _table(headers: list[str], rows: list[list[str]], kind: str, verdict_column: tuple[int, ...] = ()) -> str:
    keep = [i for i, _ in enumerate(headers) if any(row[i] for row in rows)]
    head = "".join(f"<th>{_e(headers[i])}</th>" for i in keep)
    out = [f'<div class="wide"><table class="{kind}"><thead><tr>{head}</tr></thead><tbody>']
    for row in rows:
        cells = []
        for i in keep:
            css = ""
            if i in verdict_column:
                word = row[i].split(" ", 1)[0]
                css = {"holds": "holds", "DISAGREES": "DISAGREES", "not": "notjudged"}.get(word, "")
            elif _numeric(row[i]):
                css = "num"
            cells.append(f'<td class="{css}">{_e(row[i])}</td>' if css else f"<td>{_e(row[i])}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out) + "</tbody></table></div>"


def _numeric(text: str) -> bool:
    return bool(text) and text.replace(",", "").replace(".", "").replace("x", "").replace("%", "").isdigit()


def _e(text: object) -> str:
    return escape.escape(str(text), quote=True)
