"""The document's summary table (section 11), measured: the section from fixed results files, its verdicts
and advice both ways, the batch file's parts, and real runs of the measurement tasks."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import pytest
from runners_tasks import freethreaded, sharing

import runners
from runners._outputs import print_report
from tests.conftest import ROOT, run_cli
from tests.reportkit import paired, record, report_of

CPU = {"n": 8, "work": 200_000}
IO = {"n": 2_000, "seconds": 0.01}
SECTION = {"section": "summary", "section_title": "9. The document's summary table, measured"}
CPU_CLAIMS = ["threads-held-back-cpu", "asyncio-held-back-cpu", "processes-parallel-cpu",
              "multiprocessing-not-held-back", "joblib-not-held-back", "ray-not-held-back",
              "mpi4py-not-held-back"]
DATA_CLAIMS = ["threads-share-directly", "asyncio-shares-directly", "processes-need-a-mechanism",
               "joblib-serialises-automatically", "ray-distributed-objects", "mpi4py-communicates"]


def part(name: str, title: str, params: dict, claims: list[str]) -> dict:
    return {"name": f"summary.{name}", "title": title, "part": name, "params": params,
            "document": {"claims": claims}, **SECTION}


META = [part("cpu", "9a. CPU-bound", CPU, CPU_CLAIMS),
        part("io", "9b. I/O-bound", IO, ["threading-suited-io", "asyncio-massive-concurrency"]),
        part("data", "9c. Data sharing", {"megabytes": 200}, DATA_CLAIMS),
        part("free-threaded", "9d. Free-threaded", {"n": 12}, ["free-threaded-threads-parallel"])]


def cpu_records(speedups: dict[str, float], startups: dict[str, float], headroom: float = 1.9) -> list[dict]:
    """Three rounds per window: the cheap back-ends together, each distributed one beside a serial run."""
    local = {k: v for k, v in speedups.items() if k not in ("ray", "mpi", "dask")}
    walls = {(b, 2): [1 / s] * 3 for b, s in local.items()}
    records = paired("summary.cpu", {("serial", 1): [1.0] * 3, **walls}, params=CPU, task="burn",
                     headroom=headroom)
    for backend in ("ray", "mpi", "dask"):
        if backend in speedups:
            walls = {("serial", 1): [1.0] * 3, (backend, 2): [1 / speedups[backend]] * 3}
            records += paired("summary.cpu", walls, params=CPU, task="burn", headroom=headroom,
                              window=f"{backend} x2")
    for r in records:
        r["backend_startup"] = startups.get(r["backend"], 0.0)
    return records


def io_records(walls: dict[tuple[str, int], float], memory: dict[str, float]) -> list[dict]:
    """Each back-end alone in its window, the (extrapolated) serial baseline beside it."""
    records = []
    for (backend, workers), wall in walls.items():
        window = paired("summary.io", {("serial", 1): [20.0], (backend, workers): [wall]}, params=IO,
                        task="iowait", window=f"{backend} x{workers}")
        for r in window:
            r["memory_mb"] = memory.get(r["backend"], 0.5)
        records += window
    return records


def sharing_rows(copies: dict[str, float], seconds: dict[str, float] | None = None) -> list[dict]:
    rows = []
    for mechanism, (approach, _, _) in sharing.MECHANISMS.items():
        if mechanism not in copies:
            rows.append({"mechanism": mechanism, "approach": approach, "workers": 2, "array_mb": 200.0,
                         "ok": None, "note": f"not installed: {approach}"})
            continue
        rows.append({"mechanism": mechanism, "approach": approach, "workers": 2, "array_mb": 200.0,
                     "startup_s": 0.5, "seconds": (seconds or {}).get(mechanism, 0.3), "workers_mb": 50.0,
                     "added_mb": 200.0 * copies[mechanism], "copies": copies[mechanism], "ok": True,
                     "note": ""})
    return rows


NONE_FOUND = [{"interpreter": None, "found": False,
               "note": "no free-threaded interpreter found (looked for python3.13t and python3.14t on PATH "
                       "and under ~/.pyenv/versions)"}]
QUIET_CPU = {"threads": 0.97, "asyncio": 0.95, "multiprocessing": 1.8, "joblib": 1.75, "ray": 1.7,
             "mpi": 1.85, "dask": 1.6}
STARTUPS = {"multiprocessing": 0.06, "joblib": 0.9, "ray": 9.5, "mpi": 0.7, "dask": 2.4}
IO_WALLS = {("threads", 200): 0.15, ("asyncio", 200): 0.125, ("multiprocessing", 8): 2.6, ("joblib", 8): 2.7,
            ("ray", 8): 3.1, ("mpi", 8): 2.6, ("dask", 8): 3.0}
IO_MEMORY = {"threads": 4.0, "asyncio": 1.5, "multiprocessing": 60.0, "joblib": 90.0, "ray": 700.0,
             "mpi": 80.0, "dask": 400.0}
COPIES = {"threads": 0.0, "asyncio": 0.0, "shared_memory": 1.0, "pickle": 2.8, "joblib_memmap": 1.1,
          "ray_put": 1.0, "mpi_bcast": 1.0, "dask_scatter": 2.9}


def summary_records(cpu: dict[str, float] = QUIET_CPU, copies: dict[str, float] = COPIES,
                    headroom: float = 1.9, free: list[dict] | None = None) -> list[dict]:
    return (cpu_records(cpu, STARTUPS, headroom) + io_records(IO_WALLS, IO_MEMORY)
            + [record("summary.data", "serial", 1, 5.0, 500, task="sharing", params={"megabytes": 200},
                      result=sharing_rows(copies)),
               record("summary.free-threaded", "serial", 1, 0.001, 600, task="freethreaded", params={"n": 12},
                      result=free or NONE_FOUND)])


def table(report) -> dict[str, dict[str, str]]:
    summary = report.summaries["summary"]
    return {row[0]: dict(zip(summary.headers[:3] + ["gil", "gil verdict", "sharing", "sharing verdict"]
                             + summary.headers[7:], row, strict=True)) for row in summary.rows}


def test_the_section_lays_out_the_documents_words_beside_each_measured_cell(tmp_path, capsys):
    report = report_of(tmp_path, summary_records(), META)
    rows = table(report)
    assert list(rows) == ["threading", "asyncio", "multiprocessing", "joblib", "ray", "mpi4py",
                          "Dask (not in the document)"]
    threading = rows["threading"]
    assert threading["suited for (document)"] == "I/O 密集 (I/O-bound)" and threading["verdict"] == "holds"
    assert threading["gil"] == "受限 (held back)" and threading["gil verdict"] == "holds"
    assert threading["sharing"].startswith("直接共享(要鎖)") and threading["sharing verdict"] == "holds"
    assert threading["CPU-bound: speed-up, 2 workers"] == "0.97x (headroom 1.90)"
    # 2,000 waits of 10 ms: 20 s in a row, 0.15 s here, so 133 in flight of the 200 asked, at 4 MB
    assert threading["I/O-bound: speed-up; waits in flight of asked; memory"] == "133.3x; 133 of 200; 4.0 MB"
    assert threading["data: the array to every worker"] == "threads 0.300 s, 0.0 copies"
    assert rows["multiprocessing"]["data: the array to every worker"] == \
        "shared_memory 0.300 s, 1.0 copies / pickle 0.300 s, 2.8 copies"
    assert rows["ray"]["start-up s, 2 workers"] == "9.500" and rows["ray"]["gil verdict"] == "holds"
    assert rows["joblib"]["verdict"] == "-"  # "ML / scientific computing" claims nothing measurable here
    dask = rows["Dask (not in the document)"]
    assert dask["suited for (document)"] == dask["verdict"] == dask["gil verdict"] == ""
    assert dask["CPU-bound: speed-up, 2 workers"] == "1.60x (headroom 1.90)"

    markdown = (tmp_path / "report.md").read_text()
    assert markdown.index("## 9. The document's summary table, measured") \
        < markdown.index("### 9a. CPU-bound") < markdown.index("### 9d. Free-threaded")
    assert "| threading | I/O 密集 (I/O-bound) | holds | 受限 (held back) | holds |" in markdown
    assert "- free-threaded row: no free-threaded interpreter found (looked for python3.13t" in markdown
    capsys.readouterr()
    print_report(report)
    terminal = capsys.readouterr().out
    assert "9. The document's summary table, measured" in terminal and "What to use when" in terminal
    assert "Dask (not in" in terminal and "受限 (held" in terminal
    page = (tmp_path / "report.html").read_text()
    assert '<table class="summary">' in page and '<td class="holds">holds</td>' in page


def test_report_csv_carries_every_measured_cell_with_the_documents_words_and_verdict(tmp_path):
    report_of(tmp_path, summary_records(), META)
    lines = [r for r in csv.DictReader(open(tmp_path / "report.csv")) if r["experiment"] == "summary"]
    cells = {(r["configuration"], r["measure"]): r for r in lines}
    assert float(cells[("threading", "cpu_speedup")]["value"]) == pytest.approx(0.97, abs=0.005)
    gil = cells[("threading", "document_gil")]
    assert gil["document_words"] == "受限 (held back)" and gil["verdict"] == "holds" and gil["value"] == ""
    assert float(cells[("asyncio", "io_in_flight")]["value"]) == pytest.approx(160)  # 20 s / 0.125 s
    assert float(cells[("ray", "ray_put_copies")]["value"]) == 1.0
    assert float(cells[("mpi4py", "io_memory_mb")]["value"]) == 80.0
    assert cells[("multiprocessing", "document_sharing")]["verdict"] == "holds"  # needs a special mechanism
    assert cells[("joblib", "document_suited")]["verdict"] == "-"
    assert ("joblib", "io_speedup") in cells and ("Dask (not in the document)", "startup_s") in cells
    assert not [m for (a, m) in cells if a.startswith("Dask") and m.startswith("document_")]


def test_a_verdict_flips_in_its_cell_when_the_measurement_says_the_opposite(tmp_path):
    # threads at 1.8x (no GIL holding them back) and joblib handing every worker its own copy
    cpu = {**QUIET_CPU, "threads": 1.8}
    copies = {**COPIES, "joblib_memmap": 2.9}
    rows = table(report_of(tmp_path, summary_records(cpu, copies), META))
    assert rows["threading"]["gil verdict"] == "DISAGREES"
    assert rows["joblib"]["sharing verdict"] == "DISAGREES"
    assert rows["multiprocessing"]["gil verdict"] == "holds"


def test_what_to_use_when_is_written_from_this_machines_cells(tmp_path):
    advice = report_of(tmp_path / "quiet", summary_records(), META).summaries["summary"].advice
    assert ("CPU-bound pure Python: multiprocessing (1.80x), joblib (1.75x), ray (1.70x), mpi4py (1.85x), "
            "Dask (not in the document) (1.60x) ran in parallel (near the machine's headroom); threading "
            "(0.97x), asyncio (0.95x) gained nothing (the GIL holds them to one core); of those that gained, "
            "multiprocessing had its workers ready soonest (0.06 s).") in advice
    assert "asyncio kept the most in flight (160 of 200); asyncio at the least memory per wait (10 KB), " \
           "ray at the most (108 MB)" in advice
    assert "threads (0.0), asyncio (0.0) shared it without a copy; shared_memory (1.0), " \
           "joblib_memmap (1.1), ray_put (1.0), mpi_bcast (1.0) added about one copy" in advice
    # a different machine, different advice: joblib's workers ready first, processes short of the headroom
    startups = {**STARTUPS, "joblib": 0.01}
    records = cpu_records({**QUIET_CPU, "multiprocessing": 1.4}, startups) + io_records(IO_WALLS, IO_MEMORY)
    advice = report_of(tmp_path / "other", records, META[:2]).summaries["summary"].advice
    assert "of those that gained, joblib had its workers ready soonest (0.01 s)" in advice
    assert "; multiprocessing (1.40x) gained, short of the headroom;" in advice
    assert "array for every worker" not in advice  # no data part ran: nothing said of it


def test_on_a_busy_machine_the_advice_does_not_tell_parallel_from_held_back(tmp_path):
    report = report_of(tmp_path, summary_records(headroom=1.1), META)
    advice = report.summaries["summary"].advice
    assert advice.startswith("CPU-bound pure Python: not told apart here: the machine was busy (2-process "
                             "headroom 1.10)")
    assert table(report)["multiprocessing"]["gil verdict"] == "not measured"


def test_approaches_that_did_not_run_say_so_and_a_found_interpreter_fills_the_free_threaded_row(tmp_path):
    cpu = {k: v for k, v in QUIET_CPU.items() if k not in ("ray", "mpi", "dask")}
    free = [{"interpreter": "/opt/py/bin/python3.13t", "found": True, "version": "3.13.1", "gil": False,
             "threads": 2, "serial_s": 1.0, "threads_s": 0.55, "speedup": 1.82, "right": True}]
    records = cpu_records(cpu, STARTUPS) + [record("summary.free-threaded", "serial", 1, 2.0, 600,
                                                   task="freethreaded", params={"n": 12}, result=free)]
    report = report_of(tmp_path, records, [META[0], META[3]])
    summary, rows = report.summaries["summary"], table(report)
    assert rows["ray"]["CPU-bound: speed-up, 2 workers"] == "not run"
    assert rows["ray"]["gil verdict"] == "not measured"
    assert rows["threading"]["I/O-bound: speed-up; waits in flight of asked; memory"] == "not run"
    assert rows["threading"]["verdict"] == "not run"  # the I/O part did not run at all
    assert summary.lines == [
        "free-threaded row: /opt/py/bin/python3.13t (Python 3.13.1, GIL disabled): 2 threads ran the "
        "CPU-bound work at 1.82x one thread",
        "not run in this profile: ray, mpi4py, Dask (not in the document) (the full profile runs every "
        "approach; a library that is not installed is listed in the notes)"]
    (judgement,) = [j for e in report.experiments for j in e.judgements if j.claim.id.startswith("free")]
    assert judgement.verdict == "holds"  # 1.82 / headroom 1.95


# --- the batch file: parts, a back-end's own workers, memory beside each run -------------------------


def test_the_seed_tables_summary_is_one_experiment_of_four_parts():
    for quick in (False, True):
        spec = runners.load_matrix(ROOT / "conf" / "seed-tables.yaml", quick=quick)
        parts = [e for e in spec.experiments if e.get("section") == "summary"]
        assert [e["part"] for e in parts] == ["cpu", "io", "data", "free-threaded"]
        io = [c for c in spec.cells if c.experiment == "summary.io"]
        cheap = {c.group for c in io if c.backend in ("threads", "asyncio")}
        assert cheap == {"threads x200", "asyncio x200"}
        assert all(c.memory and (c.backend == "serial" or c.window == c.group) for c in io)
        assert all(c.beside for c in io if c.backend == "serial")  # none left alone in the shared window
    assert {c.backend for c in spec.cells if c.experiment == "summary.cpu"} == {
        "serial", "threads", "asyncio", "multiprocessing", "joblib"}  # the quick profile


@pytest.mark.parametrize("text, error", [
    ("parts: [cpu]", "parts: expected a mapping of part names to experiments"),
    ("parts: {cpu: {task: burn, tsak: 1}}", "experiment 'x'.parts.cpu: unknown key 'tsak'"),
    ("parts: {'a b': {task: burn}}", "parts: 'a b' is not a part name"),
    ("task: burn\n    parts: {}", "experiments[0]: unknown key 'task'"),
    ("task: iowait\n    memory: true\n    reuse: false", "memory: needs reuse: true"),
    ("task: iowait\n    backends: [{name: threads, workers: [0]}]",
     "backends[0].workers: expected a positive"),
])
def test_bad_parts_and_backend_entries_name_the_key(tmp_path, text, error):
    path = tmp_path / "b.yaml"
    path.write_text(f"experiments:\n  - name: x\n    {text}\n")
    with pytest.raises(runners.ConfigError) as caught:
        runners.load_matrix(path)
    assert error in str(caught.value)


def test_memory_beside_each_run_is_the_started_back_ends_alone(tmp_path):
    batch = tmp_path / "m.yaml"
    batch.write_text("""name: m
experiments:
  - name: io
    task: iowait
    params: {n: 64, seconds: 0.01}
    backends: [serial, {name: threads, workers: [32]}, multiprocessing]
    workers: [4]
    memory: true
""")
    done = run_cli("batch", str(batch), "--out", str(tmp_path / "out"), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    memory = {(r["backend"], r["window"]): r["memory_mb"] for r in records}
    assert set(memory) == {("threads", "threads x32"), ("serial", "threads x32"),
                           ("multiprocessing", "multiprocessing x4"), ("serial", "multiprocessing x4")}
    # four processes hold more than 32 threads, and the serial run beside them sees the idle pool
    assert memory[("multiprocessing", "multiprocessing x4")] > 4 * memory[("threads", "threads x32")]
    assert memory[("serial", "multiprocessing x4")] > 10
    assert "memory MB" in (tmp_path / "out" / "report.md").read_text()


# --- the measurement tasks, really run ---------------------------------------------------------------


ON_CLUSTERS = ["ray_put", "mpi_bcast", "dask_scatter"]  # each starts Ray, MPI ranks or Dask: slow
IN_PROCESSES = [m for m in sharing.MECHANISMS if m not in ON_CLUSTERS]


def test_the_default_sharing_run_is_every_mechanism_in_order():
    assert sharing.SharingParams().mechanisms == list(sharing.MECHANISMS) == IN_PROCESSES + ON_CLUSTERS


@pytest.mark.parametrize("mechanisms", [IN_PROCESSES, pytest.param(ON_CLUSTERS, marks=pytest.mark.slow)],
                         ids=["in-processes", "on-clusters"])
def test_every_sharing_mechanism_through_the_cli_hands_the_array_over_and_leaves_nothing_behind(
        tmp_path, mechanisms):
    # 40 MB: glibc keeps freed blocks under 32 MB in the heap (its dynamic mmap threshold), so smaller
    # arrays leave buffers of the hand-over resident and read as a fraction of a copy more
    done = run_cli("exec", "sharing", "--set", "megabytes=40", "--set", "hold=0.3", "--set",
                   f"mechanisms=[{', '.join(mechanisms)}]", "--json", timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout)
    rows = {r["mechanism"]: r for r in answer["result"]}
    assert list(rows) == mechanisms and answer["check"]["ok"] is True
    installed = [r for r in rows.values() if r["ok"] is not None]
    assert all(r["ok"] and r["note"] == "" for r in installed), installed
    if "threads" in rows:
        assert rows["threads"]["copies"] <= 0.25 and rows["asyncio"]["copies"] <= 0.25  # shared directly
        assert 0.8 <= rows["shared_memory"]["copies"] <= 1.5  # one copy, in the segment
        assert rows["pickle"]["copies"] >= 1.8  # one per worker, at least
    for mechanism in set(ON_CLUSTERS) & set(rows):
        if rows[mechanism]["ok"] is not None:
            assert rows[mechanism]["workers_mb"] > 10 and rows[mechanism]["startup_s"] > 0
    assert not list(Path(tmp_path).iterdir())  # the run's scratch folders went with it


def test_a_sharing_mechanism_whose_library_is_missing_gives_a_row_that_says_so(monkeypatch):
    approach, how, _ = sharing.MECHANISMS["ray_put"]
    monkeypatch.setitem(sharing.MECHANISMS, "ray_put", (approach, how, ("no_such_library_here",)))
    row = sharing.measure(("ray_put", 1024, 2, 0.0))
    assert row["ok"] is None
    assert row["note"] == "not installed: no_such_library_here (pip install 'runners[ray]')"
    assert sharing.check([row], sharing.SharingParams(mechanisms=["ray_put"])).ok is True


def test_the_free_threaded_search_runs_what_it_finds_and_says_when_it_finds_none(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.pyenv here
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    (row,) = runners.run("freethreaded", params={"n": 2, "work": 1000, "rounds": 1}).result
    assert row == {"interpreter": None, "found": False,
                   "note": f"no free-threaded interpreter found (looked for {freethreaded.searched()})"}
    found = tmp_path / "bin"
    found.mkdir()
    os.symlink(sys.executable, found / "python3.13t")  # a stand-in: this interpreter, GIL and all
    monkeypatch.setenv("PATH", str(found))
    record_ = runners.run("freethreaded", params={"n": 4, "work": 20_000, "rounds": 2})
    (row,) = record_.result
    assert row["found"] and row["interpreter"] == str(found / "python3.13t") and row["right"] is True
    assert row["gil"] is True and row["version"] == sys.version.split()[0] and row["speedup"] > 0
    assert record_.check.ok is True


def test_the_section_has_a_picture_of_its_three_measured_columns(tmp_path):
    import matplotlib.image

    report = report_of(tmp_path, summary_records(), META, plots=True)
    assert report.summaries["summary"].plots == ["plots/summary-summary.png"]
    image = matplotlib.image.imread(tmp_path / "plots" / "summary-summary.png")
    assert image.shape[0] > 200 and image.shape[1] > 800
    assert "![plots/summary-summary.png](plots/summary-summary.png)" in (tmp_path / "report.md").read_text()
    assert '<img alt="plots/summary-summary.png" src="data:image/png;base64,' in \
        (tmp_path / "report.html").read_text()


def test_an_interpreter_that_is_not_there_is_a_one_line_error(tmp_path):
    done = run_cli("exec", "freethreaded", "--set", f"interpreters=[{tmp_path}/python3.13t]", timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (f"Error: interpreters: none of ['{tmp_path}/python3.13t'] is an "
                                   "executable file or a name on PATH; give paths to free-threaded "
                                   "interpreters, or [] to look for python3.13t and python3.14t")
