"""What every benchmark shares: wait for a quiet machine, print a table, name the machine."""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Sequence

from runners._sysinfo import Headroom, cpu_model  # the machine's line and state: a benchmark, not a plugin

PROCESS_BACKENDS = ("multiprocessing", "futures", "joblib", "mpi", "ray", "dask")


def arguments(doc: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small workloads: a smoke test, not figures")
    parser.add_argument("--max-load", type=float, default=1.5,
                        help="wait (up to 5 minutes) until the 1-minute load average is below this")
    return parser


def headroom(seconds: float = 0.3) -> float:
    """How much faster two processes spin than one right now (2.0 on an idle 2-core machine): the
    measurement `runners batch` takes beside every round of runs."""
    with Headroom(seconds) as spinners:
        return spinners.measure()


def wait_for_quiet(max_load: float, patience: float = 300) -> None:
    """Figures taken while other work runs are noise: wait until the load average is low and two
    processes really do run twice as fast as one (the load average lags behind a new neighbour)."""
    deadline = time.monotonic() + patience
    while True:
        load, room = os.getloadavg()[0], headroom()
        if (load < max_load and room >= 1.85) or time.monotonic() > deadline:
            break
        time.sleep(5)
    busy = load >= max_load or room < 1.85
    note = f"  (still busy after {patience:.0f} s: figures are noisy)" if busy else ""
    print(f"# {machine()}, load {load:.2f}, 2-process headroom {room:.2f}{note}", flush=True)


def machine() -> str:
    cores = len(os.sched_getaffinity(0))
    return (f"{cpu_model()}, {cores} usable cores, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (pasted as is into benchmarks/README.md)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |" for row in cells]
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def verdict(ok: bool) -> str:
    return "yes" if ok else "NO"
