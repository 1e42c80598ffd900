"""Memory under many items: the driver's peak RSS from 100,000 to 10,000,000 tiny items.

    .venv/bin/python benchmarks/memory.py [--quick] [--backends multiprocessing futures ...]

Each cell is a fresh interpreter (`python -c`) that runs `runners.run("tiny", n=N)` and prints its own
peak RSS (`resource.getrusage(RUSAGE_SELF).ru_maxrss`: the driver only, not its workers). Results
stream in item order, items are generated lazily and batches are cut on demand, so the peak should
not depend on N. Target: the largest peak within 20% of the smallest, per back-end.
"""

from __future__ import annotations

import json
import subprocess
import sys

from _common import PROCESS_BACKENDS, arguments, table, verdict, wait_for_quiet

CELL = """
import json, resource, runners
record = runners.run("tiny", backend={backend!r}, workers=2, params={{"n": {n}}}, chunksize={chunksize})
assert record.check.ok
print(json.dumps({{"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                   "compute": record.timings.compute, "batches": record.batches}}))
"""


def cell(backend: str, n: int, chunksize: int | None) -> dict:
    code = CELL.format(backend=backend, n=n, chunksize=chunksize)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        sys.exit(f"{backend} n={n} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--backends", nargs="+", default=list(PROCESS_BACKENDS))
    options = parser.parse_args()
    sizes = [10_000, 100_000, 1_000_000] if options.quick else [100_000, 1_000_000, 10_000_000]
    wait_for_quiet(options.max_load)
    rows = []
    for backend in options.backends:
        for chunksize in (None, 10_000):  # automatic, and capped: shows what the peak is made of
            peaks = []
            for n in sizes:
                out = cell(backend, n, chunksize)
                peaks.append(out["rss_mb"])
                print(f"  {backend} chunksize={chunksize} n={n:,}: {out['rss_mb']:.1f} MB, "
                      f"{out['compute']:.2f} s, {out['batches']} batches", flush=True)
            growth = max(peaks) / min(peaks)
            rows.append([backend, chunksize or "auto", *peaks, growth, verdict(growth <= 1.20)])
    print("driver peak RSS (MB) by number of tiny items, 2 workers")
    print(table(["backend", "chunksize", *[f"{n:,}" for n in sizes], "max/min", "<= 1.20"], rows))


if __name__ == "__main__":
    main()
