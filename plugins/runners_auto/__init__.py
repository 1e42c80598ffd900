"""The `auto` back-end: measure first, and parallelise only when it pays.

It runs the first batches itself, in the driver (the engine starts with one-item batches and sizes the
next ones from the cost it measured), so after a few batches it knows what an item costs. It then
estimates the work left and compares what each choice would take:

    serial:   remaining * cost
    parallel: startup + remaining * (cost / workers + item_overhead)

and either goes on serially or starts the `parallel` back-end (loaded through the registry) and hands
it every remaining batch. Tiny items stay serial: sending them costs more than running them.

The back-end is not told how many items are left; the batch sizes say it. The engine shrinks batches
towards the end so the last ones spread over all workers (each holds about remaining / (2 * workers)
items), and never cuts them larger than that, so `2 * workers * len(batch)` is a lower bound on the
items left that is close to exact near the end. While batches stay full size, the work already done
is taken as a second estimate of the work ahead (a long run so far is likely to go on).

The choice and its reason go in every `BatchResult.extra["auto"]`, which the run record keeps
(`--json`: `extra.auto`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from runners.backend import Backend, Batch, BatchResult, ConfigError, load_backend, param, run_batch


@dataclass(frozen=True)
class AutoOptions:
    parallel: str = param("futures", help="the back-end that takes over when parallel pays")
    probe_seconds: float = param(0.02, min=0, help="serial work measured before the first decision")
    startup_seconds: float = param(
        0.05, min=0, help="what starting the parallel back-end is taken to cost (futures: ~0.02 s; "
                          "raise it for ray or dask, whose start takes seconds)")
    item_overhead_seconds: float = param(
        2e-6, min=0, help="what sending one item and its result to a worker costs the driver")


class AutoBackend(Backend):
    """Runs batches in the driver until it has measured enough, then stays serial or goes parallel."""

    name = "auto"
    Options = AutoOptions
    separate_processes = True  # it may hand items to processes
    pickles_items = True  # ... so the engine checks that they pickle
    # lost_items None: until it hands over, items run in the driver (as serial); after, its parallel
    # back-end's guarantees hold

    def start(self) -> None:
        self._parallel: Backend | None = None
        self.choice = "undecided"  # "serial", or the parallel back-end's name once it took over
        self.reason = ""
        self.parallel_startup = 0.0
        self._seconds = 0.0  # measured serial compute, and the items it covered
        self._items = 0
        self._largest = 0  # the largest batch so far: a smaller one means the end is near
        if self.options.parallel == self.name:
            raise ConfigError("backend.parallel: 'auto' cannot hand over to itself; use e.g. 'futures'")
        # A bad name is an error now, not after the probe; and its batches must suit the back-end
        # that may take them over (Ray's are smaller).
        self.max_batch_bytes = load_backend(self.options.parallel).max_batch_bytes

    def run(self, batches: Iterator[Batch]) -> Iterator[BatchResult]:
        if self._parallel is not None:  # a retry pass after the hand-over
            yield from self._tagged(self._parallel.run(batches))
            return
        for batch in batches:
            if self._seconds >= self.options.probe_seconds:
                self._decide(len(batch.items))
            if self._parallel is not None:
                yield from self._tagged(self._parallel.run(itertools.chain([batch], batches)))
                return
            self._largest = max(self._largest, len(batch.items))
            result = run_batch(batch)
            if result.error is None:
                self._seconds += result.seconds
                self._items += len(result.values)
            yield self._tag(result)

    def _decide(self, next_batch: int) -> None:
        """Stay serial for now, or start the parallel back-end, from the measured item cost."""
        cost = self._seconds / max(self._items, 1)
        remaining = 2 * self.workers * next_batch  # exact-ish once batches shrink, a lower bound before
        if next_batch >= self._largest:  # not shrinking yet: the run is likely to last as long again
            remaining = max(remaining, self._items)
        serial = remaining * cost
        gain = serial - remaining * (cost / self.workers + self.options.item_overhead_seconds)
        figures = (f"measured {seconds(cost)} per item, ~{remaining:,} items left, "
                   f"~{seconds(serial)} of work serially")
        parallel, startup = self.options.parallel, seconds(self.options.startup_seconds)
        if self.workers < 2:
            self.choice = "serial"
            self.reason = f"{figures}; one worker: no pool can be faster"
            return
        if gain <= 0:
            self.choice = "serial"
            self.reason = f"{figures}; sending items to {parallel} workers costs more than running them"
            return
        if gain <= self.options.startup_seconds:
            self.choice = "serial"
            self.reason = (f"{figures}; {self.workers} {parallel} workers would save {seconds(gain)}, "
                           f"less than their start-up (~{startup})")
            return
        began = time.perf_counter()
        backend = load_backend(parallel)(None, self.workers)
        backend.__enter__()  # shuts itself down if its start fails
        self.on_shutdown(backend.shutdown)
        self._parallel = backend
        self.parallel_startup = time.perf_counter() - began
        self.choice = backend.name
        self.reason = (f"{figures}; {self.workers} {parallel} workers save ~{seconds(gain)}, more than "
                       f"their start-up (~{startup})")

    def _tagged(self, results: Iterator[BatchResult]) -> Iterator[BatchResult]:
        for result in results:
            yield self._tag(result)

    def _tag(self, result: BatchResult) -> BatchResult:
        result.extra["auto"] = self.describe()
        return result

    def describe(self) -> dict[str, Any]:
        """The choice and why, for records and reports (the engine keeps the latest)."""
        if self.choice == "undecided":  # true of the run if no later batch reports a decision
            cost = f" ({seconds(self._seconds / self._items)} per item)" if self._items else ""
            return {"choice": "serial",
                    "reason": f"all the work took {seconds(self._seconds)}{cost}, less than the "
                              f"{seconds(self.options.probe_seconds)} it measures before deciding",
                    "parallel_startup": 0.0}
        return {"choice": self.choice, "reason": self.reason,
                "parallel_startup": round(self.parallel_startup, 4)}


def seconds(value: float) -> str:
    """A duration as people write it: 25 ms, 1.2 us, 3.4 s."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value * 1e9:.3g} ns"
