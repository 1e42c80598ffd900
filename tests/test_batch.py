"""Batch jobs: cells, resume after SIGKILL, torn lines, strict validation, the shipped batch end to end."""

from __future__ import annotations

import json
import os
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


def write(tmp_path: Path, text: str = BATCH) -> Path:
    path = tmp_path / "batch.yaml"
    path.write_text(text)
    return path


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_cells_are_the_matrix_with_serial_collapsed_to_one_worker(tmp_path):
    spec = runners.load_batch(write(tmp_path), out=tmp_path / "out")
    assert [(c.backend, c.workers) for c in spec.cells] == [("serial", 1), ("threads", 1), ("threads", 2)]
    assert spec.repeats == {"sleepy": 2}


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
    assert len(final) == 6  # 3 cells x 2 repeats
    assert len({(r["cell"], r["repeat"]) for r in final}) == 6
    assert f"{6 - partial} run(s) done, {partial} kept" in done.stdout
    assert all(r["check"]["ok"] and r["result"] == 6 for r in final)


def test_a_torn_last_line_is_dropped_and_rerun(tmp_path):
    config, out = write(tmp_path), tmp_path / "out"
    runners.run_batch_file(config, out=out, show_progress=False)
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    assert len(runners.read_results(out / "results.jsonl")) == 5
    outcome = runners.run_batch_file(config, out=out, show_progress=False)
    assert (outcome.ran, outcome.already) == (1, 5)
    final = records(out)
    assert len(final) == 6 and len({(r["cell"], r["repeat"]) for r in final}) == 6


def test_dry_run_lists_cells_and_runs_nothing(tmp_path):
    lines: list[str] = []
    runners.run_batch_file(write(tmp_path), out=tmp_path / "out", dry_run=True, echo=lines.append)
    assert len(lines) == 3 and all("2/2 to run" in line for line in lines)
    assert not (tmp_path / "out" / "results.jsonl").exists()


@pytest.mark.parametrize(("text", "message"), [
    ("experiments: [{name: a, task: tiny, worker: [1]}]", "unknown key 'worker' (did you mean 'workers'?)"),
    ("experiments: [{name: a, task: tiny, backends: [nope]}]", "unknown back-end 'nope'"),
    ("experiments: [{name: a, task: tiny, params: {n: -1}}]", "params.n: -1 is too small"),
    ("experiments: [{name: a, task: tiny, chunksize: [0]}]", "expected a positive integer, 'auto' or 'rule'"),
    ("repeats: 0\nexperiments: [{name: a, task: tiny}]", "repeats: expected a positive integer"),
])
def test_bad_batch_files_name_file_key_and_value(tmp_path, text, message):
    with pytest.raises(runners.ConfigError) as caught:
        runners.load_batch(write(tmp_path, text))
    assert message in str(caught.value) and "batch.yaml" in str(caught.value)


def test_rule_of_thumb_chunksize_is_len_over_four_workers(tmp_path):
    spec = runners.load_batch(write(tmp_path, "experiments: [{name: c, task: tiny, params: {n: 1000}, "
                                              "backends: [threads], workers: [2], chunksize: [rule]}]"))
    assert spec.cells[0].chunksize == 1000 // (2 * 4)


def test_quick_seed_tables_batch_through_the_cli(tmp_path):
    out = tmp_path / "seed"
    done = run_cli("batch", "conf/seed-tables.yaml", "--quick", "--out", str(out), timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    report = (out / "report.md").read_text()
    for title in ["1. Monte Carlo pi", "2. is_prime", "3. Factorising", "4a. I/O-bound", "4b. CPU-bound",
                  "5. Start-up", "6. chunksize", "7. Inter-process", "8. The GIL counter"]:
        assert title in report
    assert "DISAGREES: the document printed 8713" in report and "counts 8392" in report
    assert all(r["check"]["ok"] for r in records(out))
    assert (out / "report.csv").exists() and (out / "times-pi.png").exists()


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
