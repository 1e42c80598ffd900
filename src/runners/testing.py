"""Item functions and tasks for testing back-ends; importable wherever runners is, so workers find them.

The conformance suite in the project's tests/ runs every installed back-end through cases built on
these; plugin authors can use them the same way.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ._task import Task, param


def echo(item: Any) -> Any:
    return item


def sleep_then_echo(item: tuple[Any, float]) -> Any:
    """Return the value after a delay, so items finish out of order."""
    value, delay = item
    time.sleep(delay)
    return value


def raise_on_seven(item: int) -> int:
    if item == 7:
        raise ValueError(f"item {item} is unlucky")
    return item * 2


def whereami(item: Any) -> tuple[str, int]:
    """The host and process that ran the item."""
    time.sleep(0.01)
    return socket.gethostname(), os.getpid()


class Unpicklable(Exception):
    """An exception that cannot cross a process boundary as itself."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.handle = lambda: None  # lambdas do not pickle


def raise_unpicklable(item: Any) -> Any:
    raise Unpicklable(f"cannot travel: {item!r}")


def exit_in_item(item: int) -> int:
    if item == 3:
        raise SystemExit(3)
    return item


@dataclass(frozen=True)
class EchoParams:
    items: list[Any] = param([], help="items to echo back")


def _split(params: EchoParams, seed: int) -> list[Any]:
    return list(params.items)


def _collect(values: Iterator[Any], params: EchoParams) -> list[Any]:
    return list(values)


def map_task(fn: Any, name: str | None = None) -> Task:
    """A Task mapping `fn` over the `items` param, returning the list of results."""
    return Task(name or fn.__name__, EchoParams, _split, fn, _collect)
