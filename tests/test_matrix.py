"""Batch jobs: cells, resume after SIGKILL, torn lines, strict validation, the shipped batch end to end."""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import runners
from tests.conftest import ROOT, run_cli

BATCH = """
name: small
repeats: 2
experiments:
  - name: sleepy
    task: iowait
    params: {n: 4, seconds: 0.15}
    backends: [serial, threads]
    workers: [1, 2]
"""

# The same matrix with waits too short to matter: for the tests that need no run long enough to be
# killed between two records (only the SIGKILL test does).
QUICK_BATCH = BATCH.replace("seconds: 0.15", "seconds: 0.01")


def write(tmp_path: Path, text: str = BATCH) -> Path:
    path = tmp_path / "batch.yaml"
    path.write_text(text)
    return path


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_cells_are_the_matrix_with_serial_collapsed_to_one_worker(tmp_path):
    matrix = runners.load_matrix(write(tmp_path), out=tmp_path / "out")
    assert [(c.backend, c.workers) for c in matrix.cells] == [("serial", 1), ("threads", 1), ("threads", 2)]
    assert matrix.repeats == {"sleepy": 2}


def test_batch_resumes_after_sigkill_with_exact_records_and_no_duplicates(tmp_path):
    config, out = write(tmp_path), tmp_path / "out"
    command = [sys.executable, "-m", "runners", "batch", str(config), "--out", str(out), "--no-report"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # kill once some, not all, runs are stored
            store = out / "results.jsonl"
            if store.exists() and store.read_text().count("\n") >= 2:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    partial = len(records(out))
    assert 2 <= partial < 6
    done = run_cli("batch", str(config), "--out", str(out), "--no-report", timeout=120)
    assert done.returncode == 0, done.stderr
    final = records(out)
    check_planned_and_extra(final)
    assert f"{len(final) - partial} run(s) done, {partial} kept" in done.stdout
    assert all(r["check"]["ok"] and r["result"] == 6 for r in final)


def check_planned_and_extra(final: list[dict], cells: int = 3) -> None:
    """Each cell's 2 repeats once; beyond them only extra baseline runs beside resumed ones."""
    planned = [r for r in final if r["repeat"] < 2]
    assert len(planned) == 2 * cells and len({(r["cell"], r["repeat"]) for r in planned}) == 2 * cells
    assert len({(r["cell"], r["repeat"]) for r in final}) == len(final)  # no duplicate at all
    assert all(r["backend"] == "serial" for r in final if r["repeat"] >= 2)


def test_a_torn_last_line_is_dropped_and_rerun(tmp_path):
    config, out = write(tmp_path, QUICK_BATCH), tmp_path / "out"
    runners.run_matrix(config, out=out, show_progress=False)
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    assert len(runners.read_results(out / "results.jsonl")) == 5
    dropped = json.loads(lines[-1])
    outcome = runners.run_matrix(config, out=out, show_progress=False)
    # the dropped run again, and, unless it was the baseline, the baseline again beside it
    assert (outcome.ran, outcome.already) == (1 if dropped["backend"] == "serial" else 2, 5)
    final = records(out)
    check_planned_and_extra(final)


def test_a_run_resumed_an_hour_later_is_paired_with_a_baseline_run_beside_it(tmp_path):
    one_pair = QUICK_BATCH.replace("workers: [1, 2]", "workers: [2]")
    config, out = write(tmp_path, one_pair), tmp_path / "out"
    runners.run_matrix(config, out=out, show_progress=False)
    kept = [r for r in records(out) if not (r["backend"] == "threads" and r["repeat"] == 1)]
    for r in kept:  # as if the first session ran an hour ago
        for key in ("started_at", "finished_at"):
            r[key] = (datetime.datetime.fromisoformat(r[key]) - datetime.timedelta(hours=1)).isoformat()
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    outcome = runners.run_matrix(config, out=out, show_progress=False)
    assert outcome.ran == 2  # threads x2 repeat 1, and serial once more beside it
    final = records(out)
    check_planned_and_extra(final, cells=2)
    rows = {r.name: r for r in runners.make_report(out, plots=False).experiments[0].rows}
    assert not any("apart" in n for n in rows["threads x2"].noisy), rows["threads x2"].noisy
    assert len(rows["serial x1"].runs) == 3

def test_dry_run_prints_the_counts_and_what_sets_each_cell_apart_and_runs_nothing(tmp_path):
    lines: list[str] = []
    runners.run_matrix(write(tmp_path), out=tmp_path / "out", dry_run=True, echo=lines.append)
    assert lines[0] == (f"small (full profile): 1 experiments, 3 cells, 6 runs, 6 to do in 1 windows; "
                        f"results in {tmp_path / 'out'}")
    assert lines[1:] == ["  sleepy: serial x1, chunksize=auto: 2/2 to run",
                         "  sleepy: threads x1, chunksize=auto: 2/2 to run",
                         "  sleepy: threads x2, chunksize=auto: 2/2 to run"]
    assert not (tmp_path / "out").exists()


def test_dry_run_of_the_sweep_names_every_option_and_param_that_differs():
    done = run_cli("batch", "conf/sweep.yaml", "--dry-run", "--out", "/nonexistent/never-made")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("sweep (full profile): 1 experiments, 18 cells, 54 runs, 54 to do in 1 "
                               "windows")
    assert "  pi-sweep: multiprocessing (spawn) x2, chunksize=auto, method=numpy: 3/3 to run" in lines
    assert "  pi-sweep: multiprocessing x2, chunksize=auto, method=numpy: 3/3 to run" in lines


@pytest.mark.parametrize(("text", "message"), [
    ("experiments: [{name: a, task: tiny, worker: [1]}]", "unknown key 'worker' (did you mean 'workers'?)"),
    ("experiments: [{name: a, task: tiny, backends: [nope]}]", "unknown back-end 'nope'"),
    ("experiments: [{name: a, task: tiny, params: {n: -1}}]", "params.n: -1 is too small"),
    ("experiments: [{name: a, task: tiny, chunksize: [0]}]", "expected a positive integer, 'auto' or 'rule'"),
    ("repeats: 0\nexperiments: [{name: a, task: tiny}]", "repeats: expected a positive integer"),
])
def test_bad_batch_files_name_file_key_and_value(tmp_path, text, message):
    with pytest.raises(runners.ConfigError) as caught:
        runners.load_matrix(write(tmp_path, text))
    assert message in str(caught.value) and "batch.yaml" in str(caught.value)


def test_rule_of_thumb_chunksize_is_len_over_four_workers(tmp_path):
    matrix = runners.load_matrix(write(tmp_path, "experiments: [{name: c, task: tiny, params: {n: 1000}, "
                                              "backends: [threads], workers: [2], chunksize: [rule]}]"))
    assert matrix.cells[0].chunksize == 1000 // (2 * 4)


QUICK_TITLES = ["1. Monte Carlo pi, 4,000,000 samples", "2. is_prime over 100,000..200,000",
                "3. Factorising the document's six numbers", "4a. I/O-bound: 40 waits of 0.02 s each",
                "4b. CPU-bound: 24 pure-Python sums of 200,000 squares",
                "5. Start-up overhead: 100 tiny items", "6. chunksize on 20,000 tiny items",
                "7. Inter-process channels: 2,000 small messages and 32 MB",
                "8. The GIL counter: two threads, += 1 10,000,000 times each",
                "9a. CPU-bound: 12 pure-Python sums of 200,000 squares on 2 workers",
                "9b. I/O-bound: 1,000 waits of 0.01 s",
                "9c. Data sharing: a 50 MB array to each of 2 workers",
                "9d. The threading row's CPU-bound cell on a free-threaded interpreter"]


def test_quick_titles_and_params_state_the_sizes_that_run():
    matrix = runners.load_matrix(ROOT / "conf" / "seed-tables.yaml", quick=True)
    titles = [e["title"] for e in matrix.experiments]
    assert all(t.startswith(q) for t, q in zip(titles, QUICK_TITLES, strict=True)), titles
    pi = next(e for e in matrix.experiments if e["name"] == "pi")
    assert pi["params"] == {"samples": 4_000_000, "item_samples": 200_000, "method": "python"}
    full = runners.load_matrix(ROOT / "conf" / "seed-tables.yaml")
    assert full.experiments[0]["title"] == "1. Monte Carlo pi, 50,000,000 samples"


@pytest.mark.slow  # a minute: Ray, Dask and MPI start for pi; the pieces run fast below and in test_report
def test_quick_seed_tables_batch_through_the_cli(tmp_path):
    out = tmp_path / "seed"
    began = time.monotonic()
    done = run_cli("batch", "conf/seed-tables.yaml", "--quick", "--out", str(out), timeout=400)
    took = time.monotonic() - began
    assert done.returncode == 0, done.stderr[-3000:]
    report = (out / "report.md").read_text()
    for title in QUICK_TITLES:
        assert f"## {title}" in report
    assert "ran samples=4,000,000, item_samples=200,000, method=python (quick profile, 1 repeat(s)); the " \
           "document ran samples=50,000,000: its times are compared per M samples" in report
    assert "| 8713 (wrong: the sieve of Eratosthenes counts 8392) |" in report
    assert "DISAGREES (printed results failing the task's check (8713: the sieve" in report
    verdicts = re.findall(r"\| (holds|DISAGREES|not judged at this size|not measured here) \(", report)
    assert len(verdicts) == 38, verdicts  # every claim the batch names gets its line
    assert "## 9. The document's summary table, measured" in report  # above its parts, 9a-9d
    assert all(r["check"]["ok"] for r in records(out))
    assert (out / "report.csv").exists() and (out / "report.html").exists()
    assert (out / "plots" / "speedup-pi.png").exists() and (out / "plots" / "ipc-ipc.png").exists()
    assert "Run order: runs are ordered in rounds" in done.stdout and "2-process headroom" in done.stdout
    print(f"quick profile: {took:.1f} s")


@pytest.mark.parametrize(("task", "params"), [
    ("ipc", {"messages": 50, "volume_mb": 2}),
    ("gil", {"increments": 20_000}),
    ("burn", {"n": 4, "work": 2_000}),
])
def test_the_seed_tables_measurement_tasks_run_and_pass_their_checks(task, params):
    """The tasks only the seed-tables batch runs, at a size for the day-to-day loop (the batch itself,
    with its clusters, is a slow test): each task's own check is the independent truth."""
    record = runners.run(task, params=params)
    assert record.check.ok, record.check
    if task == "burn":
        assert record.result == 4 * sum(i * i for i in range(2_000))
    else:
        assert record.items == len(record.result) >= 2


def test_unsafe_batch_name_and_unwritable_output_are_clear_errors(tmp_path):
    from tests.conftest import run_cli

    bad_name = tmp_path / "b.yaml"
    bad_name.write_text("name: ../escape\nexperiments: [{name: a, task: tiny}]\n")
    done = run_cli("batch", str(bad_name))
    assert done.returncode == 2 and "safe folder name" in done.stderr and "Traceback" not in done.stderr
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = run_cli("batch", str(write(tmp_path)), "--out", str(blocker / "out"))
    assert done.returncode == 2 and "cannot be written" in done.stderr and "Traceback" not in done.stderr


CAPPED = """
name: capped
experiments:
  - name: stuck
    task: iowait
    params: {n: 6, seconds: 60}
    backends: [multiprocessing]
    workers: [2]
    run_timeout: 1.5
  - name: fine
    task: iowait
    params: {n: 4, seconds: 0.05}
    backends: [serial, threads]
    workers: [2]
"""


def test_a_cell_past_its_run_timeout_fails_alone_and_the_batch_exits_1_after_the_rest(tmp_path):
    config, out = write(tmp_path, CAPPED), tmp_path / "out"
    began = time.monotonic()
    done = run_cli("batch", str(config), "--out", str(out), "--no-report", timeout=120)
    assert time.monotonic() - began < 40  # the stuck cell would sleep for minutes
    assert done.returncode == 1
    assert "failed multiprocessing x2" in done.stderr and "run_timeout" in done.stderr
    assert "run the same command again" in done.stderr and "Traceback" not in done.stderr
    kept = records(out)
    assert sorted(r["backend"] for r in kept) == ["serial", "threads"]
    assert all(r["check"]["ok"] for r in kept)


ROUNDS = """
name: rounds
repeats: 3
seed: 7
experiments:
  - name: waits
    task: iowait
    params: {n: 4, seconds: 0.01}
    backends: [serial, threads]
    workers: [1, 2]
"""


def test_the_run_order_interleaves_every_cell_in_shuffled_rounds_with_the_headroom_beside_each(tmp_path):
    config, out = write(tmp_path, ROUNDS), tmp_path / "out"
    done = run_cli("batch", str(config), "--out", str(out), "--no-report", timeout=120)
    assert done.returncode == 0, done.stderr
    runs = records(out)
    cells = {r["cell"] for r in runs}
    assert len(cells) == 3
    rounds = [runs[i:i + 3] for i in range(0, 9, 3)]  # in the order they ran, as the file keeps them
    for number, chunk in enumerate(rounds):
        assert {r["cell"] for r in chunk} == cells and {r["repeat"] for r in chunk} == {number}
        assert len({r["headroom"] for r in chunk}) == 1 and chunk[0]["headroom"] > 0
    orders = [[r["label"] + str(r["workers"]) for r in chunk] for chunk in rounds]
    assert len({tuple(o) for o in orders}) > 1, orders  # shuffled: not one fixed order every round
    # and each run's baseline partner is in its own round, seconds away, not minutes
    assert "[1/9] waits:" in done.stderr and "batch ETA" in done.stderr and "[9/9]" in done.stderr


def test_distributed_back_ends_get_windows_of_their_own_with_the_baseline_beside_them(tmp_path):
    from runners._schedule import windows

    for name in ("dask", "mpi"):
        if not runners.backend_status(name)[0]:
            pytest.skip(f"{name} is not installed")
    matrix = runners.load_matrix(write(tmp_path, "repeats: 2\nexperiments: [{name: e, task: tiny, backends: "
                                              "[serial, threads, dask, mpi], workers: [1, 2]}]"))
    made = windows(matrix)
    assert [w.name for w in made] == ["shared", "dask x1", "dask x2", "mpi x1", "mpi x2"]
    shared = made[0]
    assert sorted(c.group for c, _ in shared.rounds[0]) == ["serial x1", "threads x1", "threads x2"]
    for window in made[1:]:
        assert len(window.rounds) == 2
        for runs in window.rounds:
            assert sorted((c.group, c.beside) for c, _ in runs) == sorted(
                [(window.name, None), ("serial x1", window.name)])
    assert len({c.key for c in matrix.cells}) == len(matrix.cells) == 3 + 4 * 2


def test_fresh_starts_over_and_keeps_nothing_of_the_earlier_results(tmp_path):
    config, out = write(tmp_path, QUICK_BATCH), tmp_path / "out"
    runners.run_matrix(config, out=out, show_progress=False)
    runners.make_report(out)
    (out / "mine.txt").write_text("a user's file is not the batch's to remove")
    first = records(out)
    outcome = runners.run_matrix(config, out=out, fresh=True, show_progress=False)
    assert (outcome.ran, outcome.already) == (6, 0)
    again = records(out)
    assert len(again) == 6 and {r["started_at"] for r in again}.isdisjoint(r["started_at"] for r in first)
    assert not (out / "report.md").exists() and not (out / "plots").exists()
    assert (out / "mine.txt").exists()
