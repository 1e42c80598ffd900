"""The report from fixed results files: paired ratios, noisy marks, controls, rows, the document's column."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess

import matplotlib.image
import pytest

from runners._outputs import print_report
from tests.reportkit import paired, record, report_of

PI = {"samples": 50_000_000, "item_samples": 1_000_000, "method": "python"}


def experiment(name: str, **extra) -> list[dict]:
    return [{"name": name, "title": name, **extra}]


def rows_by_name(report) -> dict:
    return {r.name: r for r in report.experiments[0].rows}


def test_each_speedup_pairs_a_run_with_the_baseline_run_nearest_in_time_in_its_window(tmp_path):
    # The machine slows down 2x in round 3: both runs of that round slow together. Medians over whole
    # columns would say 1.0x; the pairs say 2.0x in every round.
    records = paired("pi", {("serial", 1): [1.0, 1.0, 2.0], ("threads", 2): [0.5, 0.5, 1.0]})
    # a distributed back-end's window has its own baseline runs, taken at another time and speed
    records += paired("pi", {("serial", 1): [3.0, 3.0, 3.0], ("dask", 2): [1.0, 1.0, 1.0]}, window="dask x2")
    report = report_of(tmp_path, records, experiment("pi"))
    rows = rows_by_name(report)
    assert rows["threads x2"].speedup == 2.0 and rows["threads x2"].pairs == 3
    assert rows["dask x2"].speedup == 3.0  # against the runs beside it, not the shared window's
    assert rows["serial x1"].median == 2.5 and len(rows["serial x1"].runs) == 6  # all its runs, shown once


def test_a_drifting_baseline_marks_its_ratios_noisy_with_the_figure_and_a_steady_one_does_not(tmp_path):
    drifting = paired("cpu", {("serial", 1): [1.0, 1.15, 1.3], ("multiprocessing", 2): [0.5, 0.58, 0.65]})
    report = report_of(tmp_path / "drift", drifting, experiment("cpu"))
    row = rows_by_name(report)["multiprocessing x2"]
    assert row.noisy == ["baseline drifted 30%"]
    assert "baseline drifted 30%" in (tmp_path / "drift" / "report.md").read_text()
    table = list(csv.DictReader(open(tmp_path / "drift" / "report.csv")))
    assert table[1]["noisy"] == "baseline drifted 30%"

    steady = paired("cpu", {("serial", 1): [1.0, 1.05, 1.09], ("multiprocessing", 2): [0.5, 0.52, 0.55]})
    report = report_of(tmp_path / "steady", steady, experiment("cpu"))
    assert rows_by_name(report)["multiprocessing x2"].noisy == []


def test_headroom_below_the_bound_beside_a_run_marks_it_noisy(tmp_path):
    busy = paired("cpu", {("serial", 1): [1.0], ("multiprocessing", 2): [0.6]}, headroom=1.52)
    row = rows_by_name(report_of(tmp_path / "busy", busy, experiment("cpu")))["multiprocessing x2"]
    assert row.noisy == ["headroom 1.52"] and row.headroom == 1.52
    quiet = paired("cpu", {("serial", 1): [1.0], ("multiprocessing", 2): [0.6]}, headroom=1.93)
    row = rows_by_name(report_of(tmp_path / "quiet", quiet, experiment("cpu")))["multiprocessing x2"]
    assert row.noisy == [] and row.headroom == 1.93


def test_single_worker_controls_outside_ten_percent_say_the_machine_was_noisy(tmp_path):
    noisy = paired("pi", {("serial", 1): [1.0, 1.0], ("threads", 1): [1.33, 1.33],
                          ("threads", 2): [1.2, 1.2]})
    (exp,) = report_of(tmp_path / "noisy", noisy, experiment("pi")).experiments
    assert exp.checks == ["the machine was noisy during this experiment: threads x1 ran at 0.75x serial's "
                          "speed (one worker does serial's work, so it should run at 0.9-1.1x)"]
    clean = paired("pi", {("serial", 1): [1.0, 1.0], ("threads", 1): [1.02, 1.02],
                          ("threads", 2): [1.2, 1.2]})
    (exp,) = report_of(tmp_path / "clean", clean, experiment("pi")).experiments
    assert exp.checks == ["single-worker controls within 0.9-1.1x of serial: threads x1 0.98x"]
    assert exp.checks[0] in (tmp_path / "clean" / "report.md").read_text()


def test_two_option_variants_of_one_back_end_are_two_rows_in_every_output(tmp_path, capsys):
    records = paired("sweep", {("serial", 1): [1.0], ("multiprocessing", 2): [0.6]})
    records += [record("sweep", "multiprocessing", 2, 0.9, 1.7, label="multiprocessing (spawn)", position=2)]
    report = report_of(tmp_path, records, experiment("sweep"))
    names = [r.name for r in report.experiments[0].rows]
    assert names == ["serial x1", "multiprocessing x2", "multiprocessing (spawn) x2"]
    markdown = (tmp_path / "report.md").read_text()
    assert "| multiprocessing | 2 |" in markdown and "| multiprocessing (spawn) | 2 |" in markdown
    table = list(csv.DictReader(open(tmp_path / "report.csv")))
    assert [t["configuration"] for t in table] == names and [t["runs"] for t in table] == ["1", "1", "1"]
    capsys.readouterr()
    print_report(report)  # the terminal's tables (rich writes to stdout)
    terminal = capsys.readouterr().out
    assert "multiprocessing (spawn)" in terminal and terminal.count("multiprocessing") == 2


def test_the_documents_figures_sit_beside_ours_at_its_size_or_per_unit_of_work(tmp_path):
    document = {"params": {"samples": 50_000_000}, "unit": {"param": "samples", "per": 1_000_000,
                                                             "name": "M samples"},
                "runs": [{"backend": "serial", "workers": 1, "seconds": 22.31, "result": 3.141587},
                         {"backend": "multiprocessing", "workers": 4, "seconds": 5.89}]}
    same = paired("pi", {("serial", 1): [5.0], ("multiprocessing", 2): [2.5]}, task="pi", params=PI)
    report_of(tmp_path / "same", same, experiment("pi", params=PI, document=document))
    markdown = (tmp_path / "same" / "report.md").read_text()
    assert "| serial | 1 | auto | samples=50,000,000, item_samples=1,000,000, method=python | 1 | 5 (5-5) |" \
           " 22.31 s | 1.00x |" in markdown
    assert "| 5.89 s (4 workers) | 2.00x | 3.79x (4 workers) |" in markdown
    table = list(csv.DictReader(open(tmp_path / "same" / "report.csv")))
    assert table[0]["document_s"] == "22.31" and table[1]["document_speedup"] == "3.7878"

    small = {**PI, "samples": 2_000_000}
    other = paired("pi", {("serial", 1): [0.2], ("multiprocessing", 2): [0.1]}, task="pi", params=small)
    report_of(tmp_path / "small", other, experiment("pi", params=small, document=document))
    markdown = (tmp_path / "small" / "report.md").read_text()
    assert "the document ran samples=50,000,000: its times are compared per M samples" in markdown
    assert "| 0.1 s per M samples | 0.446 s per M samples |" in markdown  # 0.2 s / 2; 22.31 s / 50
    assert "22.31 s |" not in markdown
    table = list(csv.DictReader(open(tmp_path / "small" / "report.csv")))
    assert table[0]["per_unit_s"] == "0.1000" and table[0]["document_per_unit_s"] == "0.4462"
    assert table[0]["document_s"] == ""


def test_a_cell_run_on_a_sample_is_extrapolated_by_items_and_says_so(tmp_path):
    records = [record("chunks", "serial", 1, 0.1, 0, params={"n": 1_000_000}),
               record("chunks", "multiprocessing", 2, 1.2, 1, chunk="1", params={"n": 1_000_000},
                      sample={"items": 5_000, "of": 1_000_000})]
    report = report_of(tmp_path, records, experiment("chunks"))
    row = rows_by_name(report)["multiprocessing x2, chunksize 1"]
    assert row.median == pytest.approx(240.0)
    markdown = (tmp_path / "report.md").read_text()
    assert "240 (240-240), extrapolated from 5,000 items" in markdown
    assert "ran on a sample of 5,000 of 1,000,000 items; its time is extrapolated by items (200x)" in markdown


def test_plots_are_drawn_for_speedups_channels_and_the_gil_and_open(tmp_path):
    records = paired("pi", {("serial", 1): [1.0], ("threads", 1): [1.0], ("threads", 2): [0.9],
                            ("multiprocessing", 1): [1.0], ("multiprocessing", 2): [0.55]})
    rows = [{"channel": c, "payload": p, "messages": 10, "seconds": 1.0, "msgs_per_s": 10.0 ** i,
             "MB_per_s": 2.0 ** i, "intact": True}
            for p in (64, 1_048_576) for i, c in enumerate(["queue", "pipe"])]
    records.append(record("ipc", "serial", 1, 1.0, 20, task="ipc", result=rows))
    gil = [{"mode": "one thread", "threads": 1, "expected": 20, "counter": 20, "lost": 0, "seconds": 1.0},
           {"mode": "2 threads", "threads": 2, "expected": 20, "counter": 17, "lost": 3, "seconds": 1.2}]
    records.append(record("gil", "serial", 1, 2.2, 30, task="gil", result=gil))
    meta = [{"name": n, "title": f"A title long enough to need wrapping for {n} " * 2}
            for n in ("pi", "ipc", "gil")]
    report = report_of(tmp_path, records, meta, plots=True)
    made = {p for e in report.experiments for p in e.plots}
    assert made == {"plots/times-pi.png", "plots/speedup-pi.png", "plots/times-ipc.png", "plots/ipc-ipc.png",
                    "plots/times-gil.png", "plots/gil-gil.png"}
    for name in made:
        image = matplotlib.image.imread(tmp_path / name)
        assert image.shape[0] > 150 and image.shape[1] > 300
        assert f"![{name}]({name})" in (tmp_path / "report.md").read_text()


CHECK = """
<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const decoded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  const titles = [...document.querySelectorAll("h2")].map(h => h.textContent);
  document.body.setAttribute("data-check", JSON.stringify({
    tables: document.querySelectorAll("table").length, images: images.length, decoded: decoded,
    titles: titles, external: [...document.querySelectorAll("[src],[href]")]
      .map(e => e.getAttribute("src") || e.getAttribute("href"))
      .filter(u => !u.startsWith("data:")).length}));
});
</script>
"""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None, reason="no chromium here: .ci/run installs Debian's chromium package")
def test_report_html_opens_in_headless_chromium_with_every_table_and_image(tmp_path):
    records = paired("pi", {("serial", 1): [1.0], ("threads", 1): [1.0], ("threads", 2): [0.9]})
    records += [record("ipc", "serial", 1, 1.0, 20, task="ipc", result=[
        {"channel": c, "payload": p, "messages": 10, "seconds": 1.0, "msgs_per_s": 5.0, "MB_per_s": 5.0,
         "intact": True} for p in (64, 1_048_576) for c in ("queue", "pipe")])]
    meta = [{"name": "pi", "title": "1. Monte Carlo pi", "document": {"claims": ["threads-held-back-cpu"]}},
            {"name": "ipc", "title": "7. Channels"}]
    report = report_of(tmp_path / "out", records, meta, plots=True)
    page = (tmp_path / "out" / "report.html").read_text()
    assert "http://" not in page and "https://" not in page  # nothing to fetch: it opens offline
    probe = tmp_path / "probe.html"  # the page as written, plus a script that counts what rendered
    probe.write_text(page.replace("</body>", CHECK + "</body>"))
    done = subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
                           "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    start = done.stdout.index('data-check="') + len('data-check="')
    found = json.loads(done.stdout[start:done.stdout.index('"', start)].replace("&quot;", '"'))
    plots = sum(len(e.plots) for e in report.experiments)
    tables = 2 + 1 + 1  # one per experiment, the claims of pi, the measurements of ipc
    assert found == {"tables": tables, "images": plots, "decoded": plots, "external": 0,
                     "titles": ["1. Monte Carlo pi", "7. Channels"]}


def test_a_pair_of_runs_minutes_apart_is_marked_noisy_and_one_seconds_apart_is_not(tmp_path):
    resumed = [record("cpu", "serial", 1, 1.0, 0), record("cpu", "multiprocessing", 2, 0.5, 300)]
    row = rows_by_name(report_of(tmp_path / "far", resumed, experiment("cpu")))["multiprocessing x2"]
    assert row.noisy == ["pair 300 s apart"]
    close = [record("cpu", "serial", 1, 1.0, 0), record("cpu", "multiprocessing", 2, 0.5, 2)]
    row = rows_by_name(report_of(tmp_path / "near", close, experiment("cpu")))["multiprocessing x2"]
    assert row.noisy == [] and row.speedup == 2.0
