"""What `runners exec` prints around a run: the progress bar on a terminal (driven in a real
pseudo-terminal), and the one JSON object of a failed run with --json."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
import uuid

import pytest

import runners
from runners import testing
from tests.conftest import ROOT, installed_backends, run_cli, tagged_processes

FRAME = re.compile(r"(\d[\d,]*)/(\d[\d,]*) items\s+([\d.,]+) items/s\s+ETA (\d+:\d\d|--:--)")


def run_in_terminal(*args: str, stdout_to_pipe: bool = False, timeout: float = 180) -> tuple[str, str, int]:
    """`runners ARGS` with a pseudo-terminal (100 columns) as its terminal: stdin, stderr and, unless
    `stdout_to_pipe`, stdout. Returns (what the terminal showed, what the pipe got, exit code)."""
    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    tag = uuid.uuid4().hex
    env = {**os.environ, "RUNNERS_TEST_TAG": tag, "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "runners", *args], cwd=ROOT, env=env, stdin=terminal,
                            stdout=subprocess.PIPE if stdout_to_pipe else terminal, stderr=terminal)
    os.close(terminal)
    shown = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: every process holding the terminal has closed it
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    piped = proc.stdout.read().decode() if stdout_to_pipe else ""
    code = proc.wait(timeout=30)
    end = time.monotonic() + 15
    while (left := tagged_processes(tag)) and time.monotonic() < end:
        time.sleep(0.2)
    assert not left, f"`runners {' '.join(args)}` left processes: {[p.cmdline() for p in left]}"
    return shown.decode(errors="replace"), piped, code


def frames(shown: str) -> list[tuple[int, int, float, str]]:
    found = []
    for match in FRAME.finditer(shown):
        done, total, rate, eta = match.groups()
        found.append((int(done.replace(",", "")), int(total.replace(",", "")), float(rate.replace(",", "")),
                      eta))
    return found


# iowait: 40 items of 50 ms, about a second on two workers: several redraws, whatever the back-end
IOWAIT = ["exec", "iowait", "--workers", "2", "--set", "n=40", "--set", "seconds=0.05"]


@pytest.mark.parametrize("backend", installed_backends())
def test_a_terminal_shows_items_done_rate_and_eta_then_the_record(backend):
    shown, _, code = run_in_terminal(*IOWAIT, "--backend", backend)
    assert code == 0, shown[-3000:]
    seen = frames(shown)
    assert seen, shown[-3000:]
    assert all(total == 40 for _, total, _, _ in seen)
    assert [done for done, *_ in seen] == sorted(done for done, *_ in seen)  # never backwards
    assert seen[0][0] == 0 and seen[-1][0] == 40
    middle = [f for f in seen if 0 < f[0] < 40]
    assert middle, f"no frame during the run: {seen}"
    assert all(rate > 0 and eta != "--:--" for _, _, rate, eta in middle)
    # Erased before the record, which starts on a clean line.
    bar_end = shown.rindex("40/40 items")
    record = shown.index("task     iowait")
    assert "\r\x1b[K" in shown[bar_end:record]
    assert "check    ok" in shown


def test_no_bar_when_stdout_is_not_a_terminal():
    shown, piped, code = run_in_terminal(*IOWAIT, "--backend", "threads", stdout_to_pipe=True)
    assert code == 0
    assert not frames(shown) and "items/s" not in shown and "\r" not in piped
    assert "check    ok" in piped


def test_no_bar_beside_json_even_on_a_terminal():
    shown, _, code = run_in_terminal(*IOWAIT, "--backend", "threads", "--json")
    assert code == 0
    assert "items/s" not in shown
    assert json.loads(shown)["result"] == 40 * 39 // 2


# -- --json when the run fails: one object on stdout, the exit code unchanged -------------------------

def only_json(done) -> dict:
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout
    return json.loads(lines[0])


def test_a_failed_item_prints_the_error_object_and_exits_1():
    done = run_cli("exec", "runners.testing:raise_on_seven", "--backend", "futures", "--set", "n=10",
                   "--json")
    assert done.returncode == 1
    failure = only_json(done)
    assert failure["error"]["type"] == "TaskError" and failure["error"]["items"] == [7]
    assert "item 7 is unlucky" in failure["error"]["message"]
    assert failure["task"] == "runners.testing:raise_on_seven" and failure["backend"] == "futures"
    assert "results" not in failure  # stopping at the first failure: nothing to hand back


KEEP_GOING = [b for b in installed_backends() if not runners.load_backend(b).runs_coroutines]


@pytest.mark.parametrize("backend", KEEP_GOING)
def test_keep_going_hands_back_every_result_that_finished(backend):
    done = run_cli("exec", "runners.testing:raise_on_seven", "--backend", backend, "--workers", "2",
                   "--set", "n=12", "--chunksize", "1", "--keep-going", "--json", timeout=180)
    assert done.returncode == 1, done.stderr
    failure = only_json(done)
    assert failure["error"]["type"] == "FailedItems" and failure["error"]["items"] == [7]
    assert [e["type"] for e in failure["error"]["errors"]] == ["TaskError"]
    expected = {str(i): testing.raise_on_seven(i) for i in range(12) if i != 7}
    assert failure["results"] == expected


def test_keep_going_leaves_out_every_item_of_a_failed_batch():
    done = run_cli("exec", "runners.testing:raise_on_seven", "--set", "n=12", "--chunksize", "4",
                   "--keep-going", "--json")
    failure = only_json(done)
    assert failure["error"]["items"] == [4, 5, 6, 7]  # the batch that held item 7 gave no values
    assert sorted(map(int, failure["results"])) == [0, 1, 2, 3, 8, 9, 10, 11]


def test_a_batch_that_fails_last_still_releases_the_results_behind_it(tmp_path):
    # Item 2 fails after 3, 4 and 5 have finished: their values waited behind it and must come back.
    (tmp_path / "late.py").write_text(
        "import time\n\ndef fail_late(item):\n    if item == 2:\n        time.sleep(0.5)\n"
        "        raise RuntimeError('late')\n    return item + 100\n")
    done = run_cli("exec", "late:fail_late", "--backend", "threads", "--workers", "2", "--set", "n=6",
                   "--chunksize", "1", "--keep-going", "--json", cwd=tmp_path)
    failure = only_json(done)
    assert failure["error"]["items"] == [2]
    assert failure["results"] == {"0": 100, "1": 101, "3": 103, "4": 104, "5": 105}


def test_a_lost_worker_names_its_items_in_the_error_object():
    # multiprocessing knows which items a dead worker held (futures cannot: issue 14, another branch)
    done = run_cli("exec", "runners.testing:kill_self_on", "--backend", "multiprocessing", "--workers", "2",
                   "--set", "n=6", "--chunksize", "1", "--retries", "0", "--json")
    assert done.returncode == 1
    failure = only_json(done)
    assert failure["error"]["type"] == "WorkerLost" and 3 in failure["error"]["items"]


def test_a_config_error_prints_the_error_object_and_exits_2():
    done = run_cli("exec", "pie", "--json")
    assert done.returncode == 2
    failure = only_json(done)
    assert failure == {"error": {"type": "TaskNotFound", "items": [], "message": failure["error"]["message"]}}
    assert "did you mean 'pi'" in failure["error"]["message"]
