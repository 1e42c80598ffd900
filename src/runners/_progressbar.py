"""The progress bar of `runners exec`: items done, rate and time left, drawn on a terminal only."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

REDRAW_SECONDS = 0.1  # often enough to look alive, rare enough to cost nothing between batches


class ProgressBar:
    """One line on `stream`, redrawn as batches finish and erased at the end, so that what the run
    prints afterwards (or an error) starts on a clean line. It draws nothing unless `shown`."""

    def __init__(self, label: str, shown: bool, stream: TextIO | None = None) -> None:
        self.label = label
        self.shown = shown
        self.stream = stream if stream is not None else sys.stderr
        self.total: int | None = None
        self.done = 0
        self.began: float | None = None
        self.drawn_at = 0.0

    @staticmethod
    def wanted(as_json: bool) -> bool:
        """On a terminal only: never into a pipe or a file, and never beside JSON."""
        return not as_json and sys.stdout.isatty() and sys.stderr.isatty()

    def start(self, total: int | None) -> None:
        self.total, self.done, self.began = total, 0, time.monotonic()
        self._draw()

    def advance(self, items: int) -> None:
        self.done += items
        if time.monotonic() - self.drawn_at >= REDRAW_SECONDS:
            self._draw()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.shown and self.began is not None:
            self._draw()  # the last state, however the run ended
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def line(self, width: int) -> str:
        """The bar as text, at most `width` characters."""
        elapsed = time.monotonic() - (self.began or time.monotonic())
        rate = self.done / elapsed if elapsed > 0 else 0.0
        speed = f"{_number(rate)} items/s"
        if self.total is None:  # a stream of items: no fraction, no time left
            return f"{self.label} {self.done:,} items  {speed}"[:width]
        left = (self.total - self.done) / rate if rate > 0 else None
        counts = f"{self.done:,}/{self.total:,} items  {speed}  ETA {_clock(left)}"
        fraction = self.done / self.total if self.total else 1.0
        room = width - len(self.label) - len(counts) - 9  # ' 100% |' + '| ' around the bar
        bar = ""
        if room >= 10:
            filled = round(fraction * min(room, 40))
            bar = "|" + "#" * filled + " " * (min(room, 40) - filled) + "| "
        return f"{self.label} {fraction:4.0%} {bar}{counts}"[:width]

    def _draw(self) -> None:
        if not self.shown:
            return
        width = shutil.get_terminal_size((80, 24)).columns - 1  # the last column would wrap
        self.stream.write("\r" + self.line(width) + "\x1b[K")
        self.stream.flush()
        self.drawn_at = time.monotonic()


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
