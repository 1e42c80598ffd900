"""A plain function given as a task: map it over `items` (or over 0..n-1) and return the list."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ._task import Task, param


@dataclass(frozen=True)
class MapParams:
    n: int = param(10, min=0, help="map over 0..n-1 when no items are given")
    items: list[Any] | None = param(None, help="the items to map over, as a YAML list")


def _split(params: MapParams, seed: int) -> Any:
    return params.items if params.items is not None else range(params.n)


def _combine(values: Iterator[Any], params: MapParams) -> list[Any]:
    return list(values)


def map_task(fn: Callable[[Any], Any], ref: str) -> Task:
    """A Task that applies `fn` to each item; it has no check of its own."""
    return Task(name=ref, params=MapParams, split=_split, run=fn, combine=_combine,
                description=f"map {ref} over items (or 0..n-1)")
