"""The report's pictures: times, speed-up against workers, IPC channels, the GIL counter.

Rules for every plot: a title that fits (wrapped), a log axis where values span more than 10x,
integer worker ticks, the legend outside the data, and values written where bars alone would hide them.
"""

from __future__ import annotations

import statistics
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # headless: files only

import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
from matplotlib.ticker import FixedLocator, FuncFormatter  # noqa: E402

if TYPE_CHECKING:
    from ._report import Experiment
    from ._summary import Summary

WIDTH = 8.0  # inches, at 100 dpi: readable beside the tables of report.html


def draw(exp: Experiment, folder: Path) -> list[str]:
    """Every plot that fits the experiment, written to `folder`; returns the file names."""
    made = [_times(exp, folder)]
    if _speedup_rows(exp):
        made.append(_speedup(exp, folder))
    if exp.results and "channel" in exp.results[0]:
        made.append(_ipc(exp, folder))
    if exp.results and "counter" in exp.results[0]:
        made.append(_gil(exp, folder))
    return made


def _title(ax: Any, text: str, width: int = 70) -> None:
    ax.set_title("\n".join(textwrap.wrap(text, width)), fontsize=11, loc="left")


def _log_if_wide(ax: Any, values: list[float], axis: str) -> None:
    positive = [v for v in values if v and v > 0]
    if positive and max(positive) / min(positive) > 10:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _save(fig: Any, folder: Path, name: str) -> str:
    fig.savefig(folder / name, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return name


def _times(exp: Experiment, folder: Path) -> str:
    rows = exp.rows
    fig, ax = plt.subplots(figsize=(WIDTH, 0.42 * len(rows) + 1.6))
    names = [r.name for r in rows]
    medians = [r.median for r in rows]
    low = [r.median - min(r.walls) for r in rows]
    high = [max(r.walls) - r.median for r in rows]
    bars = ax.barh(names, medians, xerr=[low, high], color="tab:blue", capsize=3)
    for bar, row in zip(bars, rows, strict=True):
        if row.sample:
            bar.set_hatch("//")
            bar.set_facecolor("tab:orange")
    ax.invert_yaxis()
    _log_if_wide(ax, medians, "x")
    for y, row in enumerate(rows):  # past the whisker, so the two never overlap
        ax.annotate(f"{row.median:.3g} s", (max(row.walls), y), xytext=(6, 0), textcoords="offset points",
                    va="center", fontsize=8)
    extra = " (hatched: extrapolated from a sample)" if any(r.sample for r in rows) else ""
    ax.set_xlabel(f"median wall time, s (whiskers: min-max){extra}")
    ax.grid(axis="x", alpha=0.3)
    ax.margins(x=0.15)
    _title(ax, f"{exp.title}: time per configuration")
    return _save(fig, folder, f"times-{exp.name}.png")


def _speedup_rows(exp: Experiment) -> list[Any]:
    """Rows for a speed-up plot: an experiment of warm back-ends with more than one worker somewhere."""
    rows = [r for r in exp.rows if not r.is_baseline and r.speedup is not None]
    cold = any(run.get("window") == "cold" for r in rows for run in r.runs)
    chunks_vary = len({r.chunksize for r in rows}) > 1  # then the times plot tells it all
    return [] if cold or chunks_vary or not any(r.workers > 1 for r in rows) else rows


def _speedup(exp: Experiment, folder: Path) -> str:
    rows = _speedup_rows(exp)
    workers = sorted({r.workers for r in rows} | {1})
    fig, ax = plt.subplots(figsize=(WIDTH, 4.6))
    ax.plot(workers, workers, "k--", linewidth=1, label="ideal (speed-up = workers)")
    rooms = [r.headroom for r in exp.rows if r.headroom is not None]
    if rooms:
        room = statistics.median(rooms)
        ax.axhline(room, color="grey", linestyle=":", label=f"2-process headroom, measured ({room:.2f})")
    series: dict[str, list[Any]] = {}
    for r in rows:
        series.setdefault(r.name.replace(f" x{r.workers}", ""), []).append(r)
    ax.plot([1], [1.0], "ks", label="serial (the baseline)")
    colours = plt.get_cmap("tab10" if len(series) <= 10 else "tab20").colors
    for index, (name, members) in enumerate(series.items()):
        members.sort(key=lambda r: r.workers)
        line = ax.plot([r.workers for r in members], [r.speedup for r in members], "o-", label=name,
                       color=colours[index % len(colours)])[0]
        noisy = [r for r in members if r.noisy]
        if noisy:  # hollow markers: a ratio the report marks noisy
            ax.plot([r.workers for r in noisy], [r.speedup for r in noisy], "o", markersize=11,
                    markerfacecolor="none", markeredgecolor=line.get_color())
    ax.axhline(1.0, color="black", linewidth=0.6)
    ax.xaxis.set_major_locator(FixedLocator(workers))
    ax.set_xlim(0.7, max(workers) + 0.3)
    ax.set_ylim(bottom=0)
    ax.set(xlabel="workers", ylabel="speed-up vs serial (paired; 1 = serial)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, fontsize=8,
              title="hollow ring: noisy", title_fontsize=8)
    _title(ax, f"{exp.title}: speed-up against workers", 60)
    return _save(fig, folder, f"speedup-{exp.name}.png")


def _ipc(exp: Experiment, folder: Path) -> str:
    payloads = sorted({r["payload"] for r in exp.results})
    panels = [("msgs_per_s", payloads[0], "messages per second"), ("MB_per_s", payloads[-1], "MB per second")]
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH + 2, 3.6))
    for ax, (metric, payload, label) in zip(axes, panels, strict=True):
        rows = [r for r in exp.results if r["payload"] == payload]
        values = [r[metric] for r in rows]
        ax.barh([r["channel"] for r in rows], values, color="tab:green")
        ax.invert_yaxis()
        _log_if_wide(ax, values, "x")
        for y, value in enumerate(values):
            ax.annotate(f"{value:,.0f}", (value, y), xytext=(4, 0), textcoords="offset points", va="center",
                        fontsize=8)
        ax.margins(x=0.25)
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
        _title(ax, f"{_size(payload)} messages", 40)
    fig.suptitle("\n".join(textwrap.wrap(exp.title, 90)), fontsize=11, x=0.02, ha="left")
    fig.tight_layout()
    return _save(fig, folder, f"ipc-{exp.name}.png")


def _gil(exp: Experiment, folder: Path) -> str:
    rows = exp.results
    names = [r["mode"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(WIDTH + 2, 3.2))
    seconds = [r["seconds"] for r in rows]
    left.bar(names, seconds, color=["tab:blue", "tab:red"][: len(rows)])
    for x, value in enumerate(seconds):
        left.annotate(f"{value:.3f} s", (x, value), xytext=(0, 3), textcoords="offset points", ha="center",
                      fontsize=8)
    left.set_ylabel("seconds for the same total increments")
    _title(left, "time: one thread vs threads sharing the counter", 40)
    counters = [r["counter"] for r in rows]
    expected = [r["expected"] for r in rows]
    right.bar(names, counters, color="tab:purple", label="counter reached")
    right.hlines(expected, [x - 0.45 for x in range(len(rows))], [x + 0.45 for x in range(len(rows))],
                 colors="black", linewidth=2, label="expected", zorder=3)
    for x, (got, want) in enumerate(zip(counters, expected, strict=True)):
        right.annotate(f"{got:,}\nof {want:,}", (x, got / 2), ha="center", va="center", fontsize=8,
                       color="white")
    right.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    right.set_ylabel("counter value")
    right.legend(loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, fontsize=8)
    _title(right, "the counter against the expected total", 40)
    fig.suptitle("\n".join(textwrap.wrap(exp.title, 90)), fontsize=11, x=0.02, ha="left")
    fig.tight_layout()
    return _save(fig, folder, f"gil-{exp.name}.png")


def draw_summary(name: str, summary: Summary, folder: Path) -> list[str]:
    """The summary table's numbers in three panels: CPU-bound speed-up against the headroom, waits in
    flight against those asked (with the memory), and the copies each sharing mechanism added."""
    by: dict[str, dict[str, float]] = {}
    for m in summary.measures:
        by.setdefault(m["approach"], {})[m["measure"]] = m["value"]
    cpu = [(a, v) for a, v in by.items() if "cpu_speedup" in v]
    io = [(a, v) for a, v in by.items() if "io_in_flight" in v]
    copies = [(key[:-len("_copies")], value) for v in by.values() for key, value in v.items()
              if key.endswith("_copies")]
    if not (cpu or io or copies):
        return []
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(WIDTH + 6, 0.45 * len(by) + 2.4))
    if cpu:
        y = range(len(cpu))
        left.barh([a for a, _ in cpu], [v["cpu_speedup"] for _, v in cpu], color="tab:blue")
        left.scatter([v.get("cpu_headroom", 0) for _, v in cpu], list(y), marker="|", s=300, color="black",
                     zorder=3)
        left.axvline(1.0, color="grey", linewidth=0.8)
        left.set_xlabel("speed-up on 2 workers (|: the 2-process headroom beside it)")
    _title(left, "CPU-bound pure Python", 40)
    if io:
        middle.barh([a for a, _ in io], [v["io_in_flight"] for _, v in io], color="tab:orange")
        for y, (_, v) in enumerate(io):
            memory = f", {v['io_memory_mb']:,.0f} MB" if "io_memory_mb" in v else ""
            middle.annotate(f"of {v['io_asked']:,.0f}{memory}", (v["io_in_flight"], y), xytext=(4, 0),
                            textcoords="offset points", va="center", fontsize=8)
        _log_if_wide(middle, [v["io_in_flight"] for _, v in io], "x")
        middle.margins(x=0.35)
        middle.set_xlabel("waits in flight on average (of those asked; memory)")
    _title(middle, "I/O-bound waits", 40)
    if copies:
        right.barh([c for c, _ in copies], [v for _, v in copies], color="tab:green")
        right.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
        for y, (_, value) in enumerate(copies):
            right.annotate(f"{value:.1f}", (value, y), xytext=(4, 0), textcoords="offset points", va="center",
                           fontsize=8)
        right.margins(x=0.2)
        right.set_xlabel("copies of the array the hand-over added")
    _title(right, "The array to every worker", 40)
    for ax in (left, middle, right):
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("\n".join(textwrap.wrap(summary.title, 110)), fontsize=11, x=0.02, ha="left")
    fig.tight_layout()
    return [_save(fig, folder, f"summary-{name}.png")]


def _size(payload: int) -> str:
    return f"{payload // 1_048_576} MiB" if payload >= 1_048_576 else f"{payload:,}-byte"
