"""Large data: one 500 MB array read by every worker, shared memory against pickling it.

    .venv/bin/python benchmarks/large_data.py [--quick] [--megabytes 500] [--backends futures ...]

Task `bigarray` (sums of slices of one float64 array, checked against a closed form): `share=shm` puts
a `SharedArray` handle in each item (the array is copied once into /dev/shm), `share=pickle` puts the
array itself in each item; items = workers, so the pickled array goes once to each worker. Each cell
runs in a fresh interpreter (registry loaded first), which reports the compute phase (delivering the
array to the workers and summing: what sharing changes), the array's creation (the task's split:
np.arange for pickle, the same values written straight into the segment for shm), the wall time of
`runners.run`, and the peak memory of the whole process tree (the sum of PSS over the driver and its
workers, sampled every 20 ms in a second, untimed run: shared pages count once). Afterwards no
`runners-*` segment may be in /dev/shm, also after a run whose item raised.
Targets: shm compute >= 10x faster than pickle (the wall-time ratio is printed beside it); shm
memory at 2 workers about that at 1 worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from _common import arguments, table, verdict, wait_for_quiet

CELL = """
import json, sys, threading, time, psutil, runners
runners.load_task("bigarray"); runners.load_backend({backend!r})
me = psutil.Process()
peak = 0
done = threading.Event()
def tree_pss():
    total = 0
    for p in [me, *me.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:
            pass
    return total
def sample():
    global peak
    while not done.is_set():
        peak = max(peak, tree_pss())
        time.sleep(0.02)
base = tree_pss()
thread = threading.Thread(target=sample, daemon=True)
if {sample}:  # a separate run: reading smaps costs time, so timed runs do not sample
    thread.start()
began = time.perf_counter()
record = runners.run("bigarray", backend={backend!r}, workers={workers},
                     params={{"megabytes": {mb}, "items": {workers}, "share": {share!r}}}, chunksize=1)
wall = time.perf_counter() - began
done.set()
if {sample}:
    thread.join()
assert record.check.ok, record.check
t = record.timings
out = {{"wall": wall, "compute": t.compute, "create": wall - t.total, "peak_mb": (peak - base) / 2**20}}
print(json.dumps(out))
"""

FAILING = """
import numpy as np, runners
from runners import SharedArray, testing
with SharedArray.create(np.ones({n})) as shared:
    try:
        runners.run(testing.map_task(testing.raise_on_seven), backend={backend!r}, workers=2,
                    params={{"items": [shared, 7]}})
    except runners.TaskError:
        pass
"""


def left_over() -> list[str]:
    return sorted(n for n in os.listdir("/dev/shm") if n.startswith("runners-"))


def python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        sys.exit(done.stderr)
    return done.stdout


def _cell(backend: str, workers: int, mb: float, share: str, sample: bool) -> dict:
    code = CELL.format(backend=backend, workers=workers, mb=mb, share=share, sample=sample)
    return json.loads(python(code).strip().splitlines()[-1])


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--megabytes", type=float, default=500)
    parser.add_argument("--backends", nargs="+", default=["futures", "multiprocessing"])
    options = parser.parse_args()
    mb = 50 if options.quick else options.megabytes
    before = left_over()
    wait_for_quiet(options.max_load)
    rows = []
    for backend in options.backends:
        cells = {}
        for share in ("shm", "pickle"):
            for workers in (1, 2):
                timed, sampled = (_cell(backend, workers, mb, share, sample) for sample in (False, True))
                cells[share, workers] = {**timed, "peak_mb": sampled["peak_mb"]}
                print(f"  {backend} {share} x{workers}: {cells[share, workers]}", flush=True)
        python(FAILING.format(backend=backend, n=int(mb * 2**20) // 8))
        shm, pickled = cells["shm", 2], cells["pickle", 2]
        speedup = pickled["compute"] / shm["compute"]
        growth = shm["peak_mb"] / max(cells["shm", 1]["peak_mb"], 1e-9)
        rows.append([backend, shm["compute"], pickled["compute"], speedup, verdict(speedup >= 10),
                     f"{shm['create']:.2f} / {pickled['create']:.2f}", pickled["wall"] / shm["wall"],
                     cells["shm", 1]["peak_mb"], shm["peak_mb"], cells["pickle", 1]["peak_mb"],
                     pickled["peak_mb"], growth])
    leaked = [n for n in left_over() if n not in before]
    print(f"bigarray {mb:g} MB, items = workers; peak = tree PSS above the idle interpreter (MB)")
    print(table(["backend", "shm compute s", "pickle compute s", "pickle/shm", ">= 10x",
                 "create s shm / pickle", "wall pickle/shm", "shm MB 1w", "shm MB 2w", "pickle MB 1w",
                 "pickle MB 2w", "shm 2w/1w"], rows))
    print(f"/dev/shm runners-* segments left after all runs (one with a failing item per back-end): "
          f"{leaked or 'none'}")


if __name__ == "__main__":
    main()
