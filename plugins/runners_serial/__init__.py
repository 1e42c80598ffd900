"""The `serial` back-end: every item in this process, one after another. The baseline for speedups."""

from __future__ import annotations

from collections.abc import Iterator

from runners.backend import Backend, Batch, BatchResult, run_batch


class SerialBackend(Backend):
    """Runs batches in the calling thread; always one worker."""

    name = "serial"
    shares_memory = True

    def __init__(self, options: object = None, workers: int | None = None) -> None:
        super().__init__(options, 1)  # a worker count above one would only mislead the report

    def start(self) -> None:
        pass

    def run(self, batches: Iterator[Batch]) -> Iterator[BatchResult]:
        for batch in batches:
            yield run_batch(batch)
