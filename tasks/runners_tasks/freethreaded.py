"""CPU-bound threads on a free-threaded interpreter (the document's section 12), if one is installed.

The summary table's threading row, CPU-bound cell, measured once more without the GIL: the same pure-
Python sums in one thread and split over `threads` threads, alternately for `rounds` rounds, in a child
process of each free-threaded interpreter found (it runs `_threadprobe.py`, standard library only, since
runners is not installed there). Without `interpreters`, it looks for python3.13t and python3.14t on
PATH and under ~/.pyenv/versions; finding none is a result too, and a row says so.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import statistics
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runners import ConfigError, Task, Verdict, param

NAMES = ("python3.13t", "python3.14t")
PYENV = "~/.pyenv/versions/*/bin/python3.1[3-9]t"
PROBE = Path(__file__).with_name("_threadprobe.py")
TIMEOUT = 600.0


@dataclass(frozen=True)
class FreeThreadedParams:
    interpreters: list[str] = param([], help="interpreters to measure (paths or names on PATH); empty: "
                                              "look for python3.13t and python3.14t")
    n: int = param(12, min=1, max=10**6, help="items of pure-Python work")
    work: int = param(300_000, min=1, max=10**9, help="squares summed per item")
    threads: int = param(2, min=2, max=64, help="threads sharing the items")
    rounds: int = param(3, min=1, max=100, help="one-thread and threaded runs, alternately")


def searched() -> str:
    return f"{' and '.join(NAMES)} on PATH and under {PYENV.split('/*')[0]}"


def find(names: list[str]) -> list[str]:
    """The interpreters to measure, each once (by where it really lives)."""
    found: list[str] = []
    candidates = [shutil.which(n) or n for n in names] if names else (
        [shutil.which(n) for n in NAMES] + sorted(glob.glob(os.path.expanduser(PYENV))))
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK) \
                and os.path.realpath(path) not in {os.path.realpath(f) for f in found}:
            found.append(path)
    return found


def split(params: FreeThreadedParams, seed: int) -> list[tuple[str | None, dict[str, int]]]:
    work = {"n": params.n, "work": params.work, "threads": params.threads, "rounds": params.rounds}
    found = find(list(params.interpreters))
    if not found and params.interpreters:
        raise ConfigError(f"interpreters: none of {params.interpreters} is an executable file or a name on "
                          "PATH; give paths to free-threaded interpreters, or [] to look for python3.13t and "
                          "python3.14t")
    return [(path, work) for path in found] or [(None, work)]


def probe(item: tuple[str | None, dict[str, int]]) -> dict[str, Any]:
    """Run the probe on one interpreter; the speed-up is the median of each round's pair."""
    path, work = item
    if path is None:
        return {"interpreter": None, "found": False, "note": f"no free-threaded interpreter found "
                                                             f"(looked for {searched()})"}
    done = subprocess.run([path, "-I", str(PROBE), json.dumps(work)], capture_output=True, text=True,
                          timeout=TIMEOUT)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{path} exited with {done.returncode}: {tail}")
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    ratios = [s / t for s, t in zip(answer["serial"], answer["threads"], strict=True) if t > 0]
    return {"interpreter": path, "found": True, "version": answer["version"], "gil": answer["gil"],
            "threads": work["threads"], "serial_s": round(statistics.median(answer["serial"]), 4),
            "threads_s": round(statistics.median(answer["threads"]), 4),
            "speedup": round(statistics.median(ratios), 3), "right": answer["right"]}


def combine(rows: Iterator[dict[str, Any]], params: FreeThreadedParams) -> list[dict[str, Any]]:
    return list(rows)


def check(rows: list[dict[str, Any]], params: FreeThreadedParams) -> Verdict:
    """Every interpreter's sums must equal the closed form n (w-1) w (2w-1) / 6 in both modes."""
    measured = [r for r in rows if r["found"]]
    wrong = [r["interpreter"] for r in measured if not r["right"]]
    if wrong:
        return Verdict(False, f"wrong sums on {', '.join(wrong)}")
    if not measured:
        return Verdict(True, rows[0]["note"])
    return Verdict(True, f"{len(measured)} interpreter(s); one thread and {params.threads} threads both "
                         "give n (w-1) w (2w-1) / 6")


TASK = Task("freethreaded", FreeThreadedParams, split, probe, combine, check,
            description="threads on CPU-bound work under a free-threaded interpreter, if one is installed")
