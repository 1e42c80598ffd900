"""The claims' machinery: what a claim is, how a verdict is reached, and the measures claims are made of.

A measure reads an experiment's evidence (`_evidence`) and returns one number with what it is, and the
noisy marks of the runs it came from, or raises NotMeasured when the runs it needs did not happen. The
claims table itself (which claim, which measure, which threshold, and why) is `_claims`.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._evidence import HEADROOM, Evidence, Row, faster
from ._registry import load_task
from ._validate import build

HOLDS, DISAGREES, NOT_JUDGED = "holds", "DISAGREES", "not judged at this size"


class NotMeasured(Exception):
    """The measurement a claim needs is not in the results (a back-end or a channel did not run)."""


@dataclass(frozen=True)
class Measured:
    value: float
    what: str  # what the value is, e.g. "threads x2 vs serial, paired speed-up"
    noisy: tuple[str, ...] = ()


@dataclass(frozen=True)
class Claim:
    id: str
    where: str  # the document's section
    original: str  # the document's own words
    says: str  # the claim, in English
    predicate: str  # the measured quantity, in words
    direction: str  # ">=" or "<="
    threshold: float
    why: str  # why this threshold
    measure: Callable[[Evidence], Measured]
    size: str = ""  # when it is judged, in words; empty: at any size
    judged_at: Callable[[dict[str, Any]], bool] = lambda params: True

    def passes(self, value: float) -> bool:
        return value >= self.threshold if self.direction == ">=" else value <= self.threshold


@dataclass(frozen=True)
class Judgement:
    claim: Claim
    verdict: str | None  # HOLDS, DISAGREES, NOT_JUDGED, or None when not measured
    value: float | None
    text: str
    noisy: tuple[str, ...] = ()


def judge(claim: Claim, evidence: Evidence) -> Judgement:
    """The claim's verdict on an experiment's evidence."""
    try:
        measured = claim.measure(evidence)
    except NotMeasured as missing:
        return Judgement(claim, None, None, f"not measured here ({missing})")
    shown = f"{measured.what}: {_number(measured.value)}"
    if not claim.judged_at(evidence.params):
        return Judgement(claim, NOT_JUDGED, measured.value, f"{NOT_JUDGED} (judged {claim.size}; {shown})",
                         measured.noisy)
    needs = f"{claim.direction} {claim.threshold:g}"
    if claim.passes(measured.value):
        return Judgement(claim, HOLDS, measured.value, f"{HOLDS} ({shown}, {needs})", measured.noisy)
    return Judgement(claim, DISAGREES, measured.value,
                     f"{DISAGREES} ({shown}; the claim needs {needs})", measured.noisy)


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"


def _row(ev: Evidence, backend: str, workers: int | None = None, chunksize: str | None = None) -> Row:
    row = ev.row(backend, workers, chunksize)
    if row is None:
        who = backend + (f" x{workers}" if workers else "") + (f" chunksize {chunksize}" if chunksize else "")
        raise NotMeasured(f"no {who} row")
    return row


def speedup(backend: str, workers: int | None = None) -> Callable[[Evidence], Measured]:
    """The paired speed-up of the back-end's row with `workers` (None: its row with the most)."""
    def measure(ev: Evidence) -> Measured:
        row = _row(ev, backend, workers)
        if row.speedup is None:
            raise NotMeasured(f"{row.name} has no baseline to pair with")
        return Measured(row.speedup, f"{row.name} vs serial, paired speed-up", tuple(row.noisy))
    return measure


def efficiency(backend: str) -> Callable[[Evidence], Measured]:
    def measure(ev: Evidence) -> Measured:
        row = _row(ev, backend)
        if row.efficiency is None:
            raise NotMeasured(f"{row.name} has no baseline to pair with")
        return Measured(row.efficiency, f"{row.name} efficiency (speed-up / workers)", tuple(row.noisy))
    return measure


def times_faster(fast: tuple[str, int | None, str | None], slow: tuple[str, int | None, str | None],
                 either_way: bool = False) -> Callable[[Evidence], Measured]:
    """How many times faster `fast` ran than `slow`, paired; `either_way`: that or its inverse, the larger."""
    def measure(ev: Evidence) -> Measured:
        a, b = _row(ev, *fast), _row(ev, *slow)
        found = faster(a, b)
        if found is None:
            raise NotMeasured(f"no runs of {a.name} and {b.name} to pair")
        ratio, noisy = found
        if either_way:
            return Measured(max(ratio, 1 / ratio), f"{a.name} vs {b.name}, the larger time over the smaller",
                            tuple(noisy))
        return Measured(ratio, f"{b.name} time / {a.name} time", tuple(noisy))
    return measure


def startup_gap(slow: tuple[str, int], fast: tuple[str, int]) -> Callable[[Evidence], Measured]:
    def measure(ev: Evidence) -> Measured:
        a, b = _row(ev, *slow), _row(ev, *fast)
        return Measured(a.startup - b.startup, f"{a.name} start-up - {b.name} start-up, s")
    return measure


def channel_ratio(metric: str, better: str, worse: str, payload: int) -> Callable[[Evidence], Measured]:
    def measure(ev: Evidence) -> Measured:
        good, bad = ev.result(channel=better, payload=payload), ev.result(channel=worse, payload=payload)
        if good is None or bad is None or not bad.get(metric):
            raise NotMeasured(f"no {better} and {worse} measurements at {payload:,} bytes")
        return Measured(good[metric] / bad[metric], f"{better} / {worse} {metric} at {payload:,} B",
                        _busy(ev))
    return measure


def _busy(ev: Evidence) -> tuple[str, ...]:
    """A task that times things inside one run (channels, the GIL counter) is as noisy as the machine."""
    rooms = [r.headroom for r in ev.rows if r.headroom is not None]
    return (f"headroom {min(rooms):.2f}",) if rooms and min(rooms) < HEADROOM else ()


def gil_lost(ev: Evidence) -> Measured:
    shared = next((r for r in ev.results if r.get("threads", 1) > 1), None)
    if shared is None:
        raise NotMeasured("no shared-counter measurement")
    return Measured(shared["lost"], f"updates lost by {shared['threads']} threads of "
                                    f"{shared['expected']:,} (counter {shared['counter']:,})")


def gil_slowdown(ev: Evidence) -> Measured:
    one = next((r for r in ev.results if r.get("threads") == 1), None)
    shared = next((r for r in ev.results if r.get("threads", 1) > 1), None)
    if one is None or shared is None or not one.get("seconds"):
        raise NotMeasured("no one-thread and shared-counter timings")
    return Measured(shared["seconds"] / one["seconds"],
                    f"{shared['threads']} threads {shared['seconds']:.3f} s / one thread "
                    f"{one['seconds']:.3f} s", _busy(ev))


def printed_results_wrong(ev: Evidence) -> Measured:
    """The document's printed results that fail the task's own check at the document's parameters."""
    printed = [r for r in ev.document.get("runs") or [] if "result" in r]
    if not printed:
        raise NotMeasured("the document prints no result here")
    task = load_task(ev.task)
    params = build(task.params, ev.document.get("params", {}), "document.params")
    wrong = []
    for run in printed:
        verdict = task.verify(run["result"], params)
        if verdict.ok is False:
            wrong.append(f"{run['result']!r}: {verdict.detail}")
    detail = "; ".join(wrong) if wrong else ", ".join(repr(r["result"]) for r in printed) + " pass"
    return Measured(len(wrong), f"printed results failing the task's check ({detail})")


def at_least(key: str, least: int) -> Callable[[dict[str, Any]], bool]:
    return lambda params: params.get(key, 0) >= least


SEPARABLE = 1.5  # the least headroom at which work in parallel (~headroom) and work the GIL holds (~1) differ


def headroom(runs: list[dict[str, Any]], most: float = 2.0) -> float | None:
    """The median 2-process headroom beside these runs, at most `most`: two workers gain at most 2x, and a
    reading above it is the lone spin slowed by a neighbour, not room the machine had."""
    rooms = [run["headroom"] for run in runs if run.get("headroom")]
    return min(most, statistics.median(rooms)) if rooms else None


def near_headroom(backend: str, workers: int) -> Callable[[Evidence], Measured]:
    """The speed-up against what the machine could give two processes at that time: the 2-process
    headroom measured beside the row's runs (see `headroom`). Parallel work approaches 1, work the GIL
    serialises 1 / headroom. Below SEPARABLE headroom the two cannot be told apart: not measured."""
    def measure(ev: Evidence) -> Measured:
        row = _row(ev, backend, workers)
        room = headroom(row.runs)
        if row.speedup is None or room is None:
            raise NotMeasured(f"{row.name} has no paired speed-up and headroom")
        if room < SEPARABLE:
            raise NotMeasured(f"the 2-process headroom beside {row.name} was {room:.2f}: below "
                              f"{SEPARABLE:g}, parallel work and work the GIL holds back run alike")
        return Measured(row.speedup / room, f"{row.name} speed-up {row.speedup:.2f} / headroom {room:.2f}",
                        tuple(row.noisy))
    return measure


def in_flight(row: Row) -> float:
    """Waits in flight on average: the time all the waits take one after another, over the run's."""
    return row.params["n"] * row.params["seconds"] / row.median


def waits_in_flight(backend: str) -> Callable[[Evidence], Measured]:
    def measure(ev: Evidence) -> Measured:
        row = _row(ev, backend)
        if not {"n", "seconds"} <= set(row.params):
            raise NotMeasured(f"{row.name} ran no waits")
        return Measured(in_flight(row), f"{row.name}: {row.params['n']:,} waits of {row.params['seconds']:g} "
                                        f"s in {row.median:.3g} s, waits in flight", tuple(row.noisy))
    return measure


def _sharing(ev: Evidence, mechanism: str) -> dict[str, Any]:
    row = ev.result(mechanism=mechanism)
    if row is None:
        raise NotMeasured(f"no {mechanism} measurement")
    if row.get("copies") is None:
        raise NotMeasured(f"{mechanism}: {row.get('note') or 'not measured'}")
    return row


def copies(mechanism: str) -> Callable[[Evidence], Measured]:
    """Copies of the array the hand-over added to the process tree, at its peak."""
    def measure(ev: Evidence) -> Measured:
        row = _sharing(ev, mechanism)
        return Measured(row["copies"], f"{mechanism}: {row['added_mb']:,.0f} MB added for a "
                                       f"{row['array_mb']:,.0f} MB array, in copies")
    return measure


def more_copies(mechanism: str, than: str) -> Callable[[Evidence], Measured]:
    def measure(ev: Evidence) -> Measured:
        a, b = _sharing(ev, mechanism), _sharing(ev, than)
        return Measured(a["copies"] - b["copies"], f"{mechanism} {a['copies']:.2f} copies - {than} "
                                                   f"{b['copies']:.2f}")
    return measure


def copies_per_receiver(mechanism: str) -> Callable[[Evidence], Measured]:
    """Copies added per worker that did not hold the array (rank 0 does, in MPI)."""
    def measure(ev: Evidence) -> Measured:
        row = _sharing(ev, mechanism)
        receivers = max(1, row["workers"] - 1)
        return Measured(row["copies"] / receivers, f"{mechanism}: {row['copies']:.2f} copies over "
                                                   f"{receivers} receiving rank(s)")
    return measure


def free_threaded(ev: Evidence) -> Measured:
    """Threads' speed-up on a free-threaded interpreter over the headroom beside the run."""
    found = [r for r in ev.results if r.get("found")]
    if not found:
        raise NotMeasured(next((r["note"] for r in ev.results if r.get("note")), "no interpreter measured"))
    free = [r for r in found if r.get("gil") is False]
    if not free:
        raise NotMeasured(f"{found[0]['interpreter']} runs with its GIL enabled")
    room = headroom([run for row in ev.rows for run in row.runs])
    if room is None:
        raise NotMeasured("no headroom measured beside the run")
    best = free[0]
    if room < SEPARABLE:
        raise NotMeasured(f"the 2-process headroom beside the run was {room:.2f}: below {SEPARABLE:g}, "
                          "parallel work and work the GIL holds back run alike")
    return Measured(best["speedup"] / room, f"{best['interpreter']} ({best['version']}) {best['threads']} "
                                            f"threads {best['speedup']:.2f}x / headroom {room:.2f}",
                    _busy(ev))
