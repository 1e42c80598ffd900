"""The document's summary table (its section 11), measured: one row per approach, its words beside ours.

The batch experiment with `parts` (cpu, io, data, free-threaded) measures it; each part is an experiment
of the report with its own rows and verdicts. This module lays them out as the document's table: the
document's words for what each approach suits, how the GIL affects it and how it shares data, each with
the verdict of the claim that reads those words (`_claims`), beside the cells measured here: CPU-bound
speed-up at 2 workers against the machine's 2-process headroom, I/O-bound waits (speed-up, waits in
flight, memory), the array handed to every worker (seconds, copies), and start-up. Then a paragraph of
what to use when, written from those cells (not from the document), and the free-threaded line.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._claims import BY_ID, NOT_JUDGED, Judgement
from ._evidence import Row
from ._predicates import SEPARABLE, headroom, in_flight

if TYPE_CHECKING:
    from ._report import Experiment


@dataclass(frozen=True)
class Approach:
    """A row of the document's table and where its cells are measured."""

    name: str  # as the document calls it
    backend: str  # runners' back-end for it
    suited: str  # the document's words, with an English gloss
    gil: str
    sharing: str
    mechanisms: tuple[str, ...]  # the `sharing` task's rows for it: its own mechanism first
    claims: Mapping[str, str] = field(default_factory=dict)  # column -> the claim reading its words

    @property
    def in_document(self) -> bool:
        return bool(self.suited)


HELD, FREE = "受限 (held back)", "不受影響 (not affected)"
APPROACHES: tuple[Approach, ...] = (
    Approach("threading", "threads", "I/O 密集 (I/O-bound)", HELD,
             "直接共享(要鎖) (shared directly, with locks)", ("threads",),
             {"suited": "threading-suited-io", "gil": "threads-held-back-cpu",
              "sharing": "threads-share-directly"}),
    Approach("asyncio", "asyncio", "I/O 密集(大量併發) (I/O-bound, massive concurrency)", HELD,
             "直接共享(單執行緒) (shared directly, one thread)", ("asyncio",),
             {"suited": "asyncio-massive-concurrency", "gil": "asyncio-held-back-cpu",
              "sharing": "asyncio-shares-directly"}),
    Approach("multiprocessing", "multiprocessing", "CPU 密集 (CPU-bound)", FREE,
             "需要特殊機制 (needs special mechanisms)", ("shared_memory", "pickle"),
             {"suited": "processes-parallel-cpu", "gil": "multiprocessing-not-held-back",
              "sharing": "processes-need-a-mechanism"}),
    Approach("joblib", "joblib", "ML/科學計算 (ML, scientific computing)", FREE,
             "自動序列化 (automatic serialisation)", ("joblib_memmap",),
             {"gil": "joblib-not-held-back", "sharing": "joblib-serialises-automatically"}),
    Approach("ray", "ray", "分散式運算 (distributed computing)", FREE, "分散式物件 (distributed objects)",
             ("ray_put",), {"gil": "ray-not-held-back", "sharing": "ray-distributed-objects"}),
    Approach("mpi4py", "mpi", "HPC 叢集 (HPC clusters)", FREE, "MPI 通訊 (MPI communication)", ("mpi_bcast",),
             {"gil": "mpi4py-not-held-back", "sharing": "mpi4py-communicates"}),
    Approach("Dask (not in the document)", "dask", "", "", "", ("dask_scatter",)),
)
HEADERS = ["approach", "suited for (document)", "verdict", "GIL (document)", "verdict",
           "data sharing (document)", "verdict", "CPU-bound: speed-up, 2 workers",
           "I/O-bound: speed-up; waits in flight of asked; memory", "data: the array to every worker",
           "start-up s, 2 workers", "noisy"]
NO_CLAIM = "-"  # the document's words make no claim measurable on one machine
PARALLEL = BY_ID["multiprocessing-not-held-back"].threshold  # of the headroom: "ran in parallel"
HELD_BACK = BY_ID["threads-held-back-cpu"].threshold  # a speed-up at most this: "gained nothing"
NOT_RUN = "not run"


@dataclass
class Summary:
    title: str
    headers: list[str]
    rows: list[list[str]]
    advice: str  # what to use when, on this machine
    lines: list[str]  # the free-threaded row and what did not run
    measures: list[dict[str, Any]]  # the table as numbers, one per approach and measure (report.csv)
    plots: list[str] = field(default_factory=list)


def build(title: str, parts: Mapping[str, Experiment]) -> Summary:
    """The section from its parts' experiments (any may be missing: their cells say so)."""
    cpu, io, data, free = (parts.get(k) for k in ("cpu", "io", "data", "free-threaded"))
    verdicts = {j.claim.id: j for exp in parts.values() for j in exp.judgements}
    rows, measures, missing = [], [], []
    for a in APPROACHES:
        cells = _Cells(a, cpu, io, data)
        if not cells.ran:
            missing.append(a.name)
        rows.append([a.name, a.suited, _word(verdicts, a, "suited"), a.gil, _word(verdicts, a, "gil"),
                     a.sharing, _word(verdicts, a, "sharing"), cells.cpu_text(), cells.io_text(),
                     cells.data_text(), cells.startup_text(), "; ".join(sorted(set(cells.noisy)))])
        measures += cells.measures(verdicts)
    lines = [_free_threaded(free)] if free is not None else []
    if missing:
        lines.append(f"not run in this profile: {', '.join(missing)} (the full profile runs every approach; "
                     "a library that is not installed is listed in the notes)")
    return Summary(title, HEADERS, rows, advice(parts), lines, measures)


def _word(verdicts: Mapping[str, Judgement], a: Approach, column: str) -> str:
    claim = a.claims.get(column)
    if claim is None:
        return NO_CLAIM if a.in_document else ""
    judgement = verdicts.get(claim)
    if judgement is None:
        return NOT_RUN
    if judgement.verdict is None:
        return "not measured"
    return "not judged" if judgement.verdict == NOT_JUDGED else judgement.verdict


def _row(exp: Experiment | None, backend: str) -> Row | None:
    return exp.evidence.row(backend) if exp is not None else None


def _room(row: Row) -> float | None:
    return headroom(row.runs, float(row.workers))


class _Cells:
    """One approach's measured cells."""

    def __init__(self, a: Approach, cpu: Experiment | None, io: Experiment | None,
                 data: Experiment | None) -> None:
        self.a = a
        self.cpu, self.io = _row(cpu, a.backend), _row(io, a.backend)
        self.shares = [r for m in a.mechanisms if data is not None
                       for r in [data.evidence.result(mechanism=m)] if r is not None]
        self.noisy = (self.cpu.noisy if self.cpu else []) + (self.io.noisy if self.io else [])

    @property
    def ran(self) -> bool:
        return bool(self.cpu or self.io or [r for r in self.shares if r.get("ok") is not None])

    def cpu_text(self) -> str:
        if self.cpu is None or self.cpu.speedup is None:
            return NOT_RUN
        room = _room(self.cpu)
        return f"{self.cpu.speedup:.2f}x" + (f" (headroom {room:.2f})" if room else "")

    def io_text(self) -> str:
        row = self.io
        if row is None or row.speedup is None:
            return NOT_RUN
        memory = row.memory_mb
        return (f"{row.speedup:,.1f}x; {in_flight(row):,.0f} of {row.workers:,}"
                + ("" if memory is None else f"; {memory:,.1f} MB"))

    def data_text(self) -> str:
        if not self.shares:
            return NOT_RUN
        parts = []
        for r in self.shares:
            if r.get("copies") is None:
                parts.append(f"{r['mechanism']}: {r.get('note') or 'not measured'}")
            else:
                parts.append(f"{r['mechanism']} {r['seconds']:.3f} s, {r['copies']:.1f} copies")
        return " / ".join(parts)

    def startup_text(self) -> str:
        return NOT_RUN if self.cpu is None else f"{self.cpu.startup:.3f}"

    def measures(self, verdicts: Mapping[str, Judgement]) -> list[dict[str, Any]]:
        """The row as lines of report.csv: the document's words with their verdicts, then the numbers."""
        a = self.a
        lines = [{"approach": a.name, "measure": f"document_{column}", "value": None, "unit": "",
                  "document": words, "verdict": _word(verdicts, a, column)}
                 for column, words in (("suited", a.suited), ("gil", a.gil), ("sharing", a.sharing)) if words]
        found: list[tuple[str, float | None, str]] = []
        if self.cpu is not None:
            found += [("cpu_speedup", self.cpu.speedup, "x"), ("cpu_headroom", _room(self.cpu), "x"),
                      ("startup_s", self.cpu.startup, "s")]
        if self.io is not None and self.io.speedup is not None:
            found += [("io_speedup", self.io.speedup, "x"), ("io_in_flight", in_flight(self.io), "waits"),
                      ("io_asked", float(self.io.workers), "waits"),
                      ("io_memory_mb", self.io.memory_mb, "MB")]
        for r in self.shares:
            if r.get("copies") is not None:
                found += [(f"{r['mechanism']}_s", r["seconds"], "s"),
                          (f"{r['mechanism']}_copies", r["copies"], "copies"),
                          (f"{r['mechanism']}_workers_mb", r["workers_mb"], "MB")]
        return lines + [{"approach": a.name, "measure": name, "value": value, "unit": unit, "document": "",
                         "verdict": ""} for name, value, unit in found if value is not None]


def _free_threaded(free: Experiment) -> str:
    rows = [r for r in free.results if r.get("found")]
    if not rows:
        note = next((r.get("note") for r in free.results if r.get("note")), "none found")
        return f"free-threaded row: {note}; the threading row's CPU-bound cell ran with the GIL only"
    texts = []
    for r in rows:
        gil = "GIL enabled" if r["gil"] else "GIL disabled"
        texts.append(f"{r['interpreter']} (Python {r['version']}, {gil}): {r['threads']} threads ran the "
                     f"CPU-bound work at {r['speedup']:.2f}x one thread")
    return "free-threaded row: " + "; ".join(texts)


def advice(parts: Mapping[str, Experiment]) -> str:
    """What to use when, from this machine's cells: one sentence per kind of work that was measured."""
    cpu, io, data = parts.get("cpu"), parts.get("io"), parts.get("data")
    said = [s for s in (_cpu_advice(cpu), _io_advice(io), _data_advice(data)) if s]
    return " ".join(said) if said else "Nothing was measured, so nothing is advised."


def _named(exp: Experiment) -> list[tuple[Approach, Row]]:
    pairs = [(a, exp.evidence.row(a.backend)) for a in APPROACHES]
    return [(a, r) for a, r in pairs if r is not None and r.speedup is not None]


def _cpu_advice(cpu: Experiment | None) -> str:
    if cpu is None or not _named(cpu):
        return ""
    rows = _named(cpu)
    rooms = [room for _, r in rows if (room := _room(r)) is not None]
    if rooms and statistics.median(rooms) < SEPARABLE:
        return (f"CPU-bound pure Python: not told apart here: the machine was busy (2-process headroom "
                f"{statistics.median(rooms):.2f}), so parallel workers had little more to use than one.")
    parallel = [(a, r) for a, r in rows if r.speedup >= PARALLEL * (_room(r) or 2.0)]
    held = [(a, r) for a, r in rows if r.speedup <= HELD_BACK]
    partly = [(a, r) for a, r in rows if (a, r) not in parallel + held]
    speed = lambda r: f"{r.speedup:.2f}x"  # noqa: E731 - a formatter, named for the calls below
    said = []
    if parallel:
        said.append(f"{_list(parallel, speed)} ran in parallel (near the machine's headroom)")
    if partly:
        said.append(f"{_list(partly, speed)} gained, short of the headroom")
    if held:
        said.append(f"{_list(held, speed)} gained nothing (the GIL holds them to one core)")
    gained = parallel + partly
    if gained:
        quickest = min(gained, key=lambda p: p[1].startup)
        said.append(f"of those that gained, {quickest[0].name} had its workers ready soonest "
                    f"({quickest[1].startup:.2g} s)")
    return "CPU-bound pure Python: " + "; ".join(said) + "."


def _io_advice(io: Experiment | None) -> str:
    if io is None or not _named(io):
        return ""
    rows = sorted(_named(io), key=lambda p: -in_flight(p[1]))
    top = rows[0]
    text = (f"Many concurrent waits: {top[0].name} kept the most in flight ({in_flight(top[1]):,.0f} of "
            f"{top[1].workers:,})")
    per = [(a, r, r.memory_mb / max(in_flight(r), 1)) for a, r in rows if r.memory_mb is not None]
    if per:
        cheap = min(per, key=lambda p: p[2])
        dear = max(per, key=lambda p: p[2])
        text += (f"; {cheap[0].name} at the least memory per wait ({_mb(cheap[2])}), {dear[0].name} at the "
                 f"most ({_mb(dear[2])})")
    return text + "."


def _data_advice(data: Experiment | None) -> str:
    if data is None:
        return ""
    ran = [r for r in data.results if r.get("copies") is not None]
    if not ran:
        return ""
    size = ran[0]["array_mb"]
    none = [r for r in ran if r["copies"] <= 0.25]
    one = [r for r in ran if 0.25 < r["copies"] <= 1.5]
    many = [r for r in ran if r["copies"] > 1.5]
    said = []
    if none:
        said.append(f"{_names(none)} shared it without a copy")
    if one:
        fastest = min(one, key=lambda r: r["seconds"])
        said.append(f"{_names(one)} added about one copy ({fastest['mechanism']} the fastest, "
                    f"{fastest['seconds']:.2g} s)")
    if many:
        said.append(f"{_names(many)} added more than one")
    return f"A {size:,.0f} MB array for every worker (copies the hand-over added): " + "; ".join(said) + "."


def _list(pairs: list[tuple[Approach, Row]], value: Any) -> str:
    return ", ".join(f"{a.name} ({value(r)})" for a, r in pairs)


def _names(rows: list[dict[str, Any]]) -> str:
    return ", ".join(f"{r['mechanism']} ({r['copies']:.1f})" for r in rows)


def _mb(value: float) -> str:
    if value >= 10:
        return f"{value:,.0f} MB"
    return f"{value:.2g} MB" if value >= 0.1 else f"{value * 1024:.0f} KB"


__all__ = ["APPROACHES", "HEADERS", "Approach", "Summary", "advice", "build"]
