"""The report from a fixed, small results file: table values, Markdown, CSV, a PNG that opens."""

from __future__ import annotations

import csv
import json

import matplotlib.image

import runners


def record(backend, workers, wall, repeat, result=5050):
    return {"experiment": "tiny", "task": "tiny", "params": {"n": 100}, "backend": backend,
            "workers": workers, "chunksize": "auto", "chunksize_label": "auto", "result": result,
            "check": {"ok": True, "detail": "sum"}, "timings": {"startup": 0.5, "compute": wall},
            "wall": wall, "backend_startup": 0.5, "cell": f"{backend}{workers}", "repeat": repeat}


def test_report_tables_markdown_csv_and_plots(tmp_path):
    rows = [record("serial", 1, w, i) for i, w in enumerate([4.0, 4.2, 3.8])]
    rows += [record("futures", 2, w, i) for i, w in enumerate([2.0, 2.5, 1.9])]
    rows += [record("futures", 4, w, i) for i, w in enumerate([1.0, 1.1, 1.3])]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"torn')
    meta = {"name": "t", "profile": "full", "experiments": [{"name": "tiny", "title": "Tiny", "document": {
        "params": {"n": 100}, "runs": [{"backend": "serial", "workers": 1, "seconds": 8.0, "result": 5051},
                                       {"backend": "futures", "workers": 4, "seconds": 2.0}]}}]}
    (tmp_path / "batch.json").write_text(json.dumps(meta))
    report = runners.make_report(tmp_path)
    (exp,) = report.experiments
    by = {(r["backend"], r["workers"]): r for r in exp.rows}
    assert by["serial", 1]["median"] == 4.0 and by["futures", 2]["median"] == 2.0
    assert (by["futures", 2]["min"], by["futures", 2]["max"]) == (1.9, 2.5)
    assert by["futures", 2]["speedup"] == 2.0 and by["futures", 4]["efficiency"] == 4.0 / 1.1 / 4
    markdown = (tmp_path / "report.md").read_text()
    assert "| futures | 2 | auto |  | 3 | 2.0000 | 1.9000-2.5000 | 2.00x | 100% |" in markdown
    assert "DISAGREES: the document printed 5051" in markdown  # the task's own check, n(n+1)/2 = 5050
    assert "4.00x vs serial with 4 workers" in markdown and "The effect reproduces" in markdown
    table = list(csv.DictReader(open(tmp_path / "report.csv")))
    assert len(table) == 3 and table[1]["speedup"] == "2.0000" and table[1]["median_s"] == "2.000000"
    for name in ("speedup-tiny.png", "times-tiny.png"):
        image = matplotlib.image.imread(tmp_path / name)
        assert image.shape[0] > 100 and image.shape[1] > 100
