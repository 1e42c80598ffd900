"""The task model: what to compute, independent of where it runs."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Verdict:
    """The outcome of a task's own correctness check; `ok` is None when the task has no check."""

    ok: bool | None
    detail: str

    def __str__(self) -> str:
        word = {True: "ok", False: "FAILED", None: "not checked"}[self.ok]
        return f"{word}: {self.detail}" if self.detail else word


@dataclass(frozen=True)
class Task:
    """A named workload: params -> independent items -> pure per-item results -> one checked result.

    `run` (and `run_async`) must be module-level functions so that they pickle to other processes.
    `split(params, seed)` returns the items, preferably as a lazy `Sequence` (a `range`, say) so that
    millions of items cost no memory; the engine, not the task, groups them into batches.
    """

    name: str
    params: type  # a dataclass whose fields (with defaults) are the task's parameters
    split: Callable[[Any, int], Sequence[Any] | Iterable[Any]]
    run: Callable[[Any], Any]
    combine: Callable[[Iterator[Any], Any], Any]
    check: Callable[[Any, Any], Verdict] | None = None
    run_async: Callable[[Any], Awaitable[Any]] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if not dataclasses.is_dataclass(self.params):
            raise TypeError(f"task {self.name!r}: params must be a dataclass, not {self.params!r}")

    def verify(self, result: Any, params: Any) -> Verdict:
        """Run the task's check, or say that it has none."""
        if self.check is None:
            return Verdict(None, "this task has no check")
        return self.check(result, params)


def param(default: Any, *, help: str = "", min: float | None = None, max: float | None = None) -> Any:
    """Declare a task or back-end parameter: a dataclass field with a help text and optional bounds."""
    meta = {"help": help, "min": min, "max": max}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def item_seed(root_seed: int, index: int) -> int:
    """The seed of item `index`: child `index` of `SeedSequence(root_seed)`, derived in O(1).

    Equal to `SeedSequence(root_seed).spawn(index + 1)[index]`, so streams are independent and the
    result of a random task depends only on the root seed, never on back-end, workers or batching.
    """
    import numpy as np  # here, not at import: numpy costs ~50 ms and maps OpenBLAS into every worker

    child = np.random.SeedSequence(root_seed, spawn_key=(index,))
    return int(child.generate_state(2, np.uint64)[0])
