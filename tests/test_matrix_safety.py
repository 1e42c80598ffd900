"""A batch's output folder under stress: two batches at once, a damaged results file, a full disk."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli

SLOW = """
name: slow
repeats: 3
experiments:
  - name: waits
    task: iowait
    params: {n: 2, seconds: 0.5}
    backends: [serial]
"""

# 20 runs of about 1.1 KB each (10 rounds, each with its headroom measured): the disk and the size
# limits below hold about half of them, so the batch fails part-way through, with margins both ways.
MANY_REPEATS = 10
MANY = f"""
name: many
repeats: {MANY_REPEATS}
experiments:
  - name: quick
    task: iowait
    params: {{n: 2, seconds: 0}}
    backends: [serial, threads]
    workers: [2]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "batch.yaml"
    path.write_text(text)
    return path


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_second_batch_on_a_folder_in_use_exits_2_at_once_naming_the_holder(tmp_path):
    config, out = write(tmp_path, SLOW), tmp_path / "out"
    first = subprocess.Popen([sys.executable, "-m", "runners", "batch", str(config), "--out", str(out),
                              "--no-report"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not ((out / ".lock").exists() and (out / ".lock").read_text().strip()):
            assert time.monotonic() < deadline and first.poll() is None, "the first batch never took the lock"
            time.sleep(0.05)
        began = time.monotonic()
        second = run_cli("batch", str(config), "--out", str(out), "--no-report")
        assert time.monotonic() - began < 15
        assert second.returncode == 2, second.stderr
        assert f"is in use by another runners batch (pid {first.pid})" in second.stderr
        assert "Traceback" not in second.stderr
        first.send_signal(signal.SIGKILL)  # a killed holder leaves no stale lock behind
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    kept = len(lines(out / "results.jsonl"))
    third = run_cli("batch", str(config), "--out", str(out), "--no-report", timeout=120)
    assert third.returncode == 0, third.stderr
    final = lines(out / "results.jsonl")
    assert len(final) == 3 and len({(r["cell"], r["repeat"]) for r in final}) == 3
    assert f"{3 - kept} run(s) done, {kept} kept" in third.stdout


def test_report_on_a_results_file_damaged_in_the_middle_names_file_and_line(tmp_path):
    config, out = write(tmp_path, MANY.replace(f"repeats: {MANY_REPEATS}", "repeats: 2")), tmp_path / "out"
    assert run_cli("batch", str(config), "--out", str(out), "--no-report").returncode == 0
    store = out / "results.jsonl"
    text = store.read_text().splitlines(keepends=True)
    store.write_text(text[0] + '{"experiment": "quick", "cell": \n' + "".join(text[1:]))
    for command in (["report", str(out)], ["batch", str(config), "--out", str(out)]):
        done = run_cli(*command)
        assert done.returncode == 1, done.stderr
        assert f"{store}:2: not a JSON record" in done.stderr and "Traceback" not in done.stderr
        assert done.stderr.strip().count("\n") == 0  # one line


def tmpfs_available() -> str | None:
    if os.geteuid() != 0:
        return "mounting a small tmpfs needs root"
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "unshare and mount are needed for a private tmpfs"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
    if probe.returncode != 0:
        return f"no private mount namespace here: {probe.stderr.decode()[:200]}"
    return None


def check_full_then_rerun(first: subprocess.CompletedProcess, kept: list[dict], final: list[dict],
                          rerun: subprocess.CompletedProcess) -> None:
    assert first.returncode == 1, first.stderr[-2000:]
    last = first.stderr.strip().splitlines()[-1]
    assert "results.jsonl" in last and "run the same command again" in last, last
    assert "Traceback" not in first.stderr
    runs = 2 * MANY_REPEATS
    assert 0 < len(kept) < runs  # some records were written whole before the disk filled, not all
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    planned = [r for r in final if r["repeat"] < MANY_REPEATS]
    assert len(planned) == runs and len({(r["cell"], r["repeat"]) for r in final}) == len(final)
    assert all(r["backend"] == "serial" for r in final if r["repeat"] >= MANY_REPEATS)  # beside resumed runs
    assert final[:len(kept)] == kept  # every finished record kept as it was
    assert all(r["check"]["ok"] for r in final)


@pytest.mark.skipif(tmpfs_available() is not None, reason=str(tmpfs_available()))
def test_a_full_disk_keeps_every_finished_record_exits_1_in_one_line_and_the_rerun_completes(tmp_path):
    config = write(tmp_path, MANY)
    mount, copies = tmp_path / "disk", tmp_path / "copies"
    mount.mkdir()
    copies.mkdir()
    python = f"{sys.executable} -m runners batch {config} --out {mount}/out --no-report"
    # A private mount namespace: the small tmpfs exists for this script only and vanishes with it. Five
    # pages: the lock, batch.json, and about three of records.
    script = f"""
set -u
mount -t tmpfs -o size=20k tmpfs {mount}
cd {ROOT}
{python} > {copies}/out1 2> {copies}/err1; echo $? > {copies}/rc1
cp {mount}/out/results.jsonl {copies}/kept.jsonl
mount -o remount,size=16m {mount}
{python} > {copies}/out2 2> {copies}/err2; echo $? > {copies}/rc2
cp {mount}/out/results.jsonl {copies}/final.jsonl
"""
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    first = subprocess.CompletedProcess([], int((copies / "rc1").read_text()), (copies / "out1").read_text(),
                                        (copies / "err1").read_text())
    rerun = subprocess.CompletedProcess([], int((copies / "rc2").read_text()), (copies / "out2").read_text(),
                                        (copies / "err2").read_text())
    assert "No space left on device" in first.stderr or "no space left" in first.stderr
    check_full_then_rerun(first, lines(copies / "kept.jsonl"), lines(copies / "final.jsonl"), rerun)


def test_a_file_size_limit_mid_batch_keeps_every_finished_record_and_the_rerun_completes(tmp_path):
    config, out = write(tmp_path, MANY), tmp_path / "out"

    def limited() -> None:  # in the child: writes past 12 KB fail with EFBIG instead of killing it
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (12_000, 12_000))

    command = [sys.executable, "-m", "runners", "batch", str(config), "--out", str(out), "--no-report"]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, preexec_fn=limited)
    kept = lines(out / "results.jsonl")
    assert "File too large" in first.stderr or "file too large" in first.stderr
    rerun = run_cli("batch", str(config), "--out", str(out), "--no-report", timeout=300)
    check_full_then_rerun(first, kept, lines(out / "results.jsonl"), rerun)
