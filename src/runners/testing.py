"""Item functions and tasks for testing back-ends; importable wherever runners is, so workers find them.

`BackendSuite` is the conformance kit built on them: a plugin's tests subclass it and name their
back-end (`class TestMine(runners.testing.BackendSuite): backend = "mine"`); see runners/_kit.py.
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
    """A Task mapping `fn` over the `items` param, returning the list of results (as for `module:fn`)."""
    from ._mapping import map_task as plain_function_task

    return plain_function_task(fn, name or fn.__name__)


def kill_self_on(item: int, target: int = 3) -> int:
    """SIGKILL the worker at item `target` (every time: a poison item)."""
    import signal

    if item == target:
        os.kill(os.getpid(), signal.SIGKILL)
    return item


def crash_once(item: tuple[int, str]) -> int:
    """SIGKILL the worker the first time (a marker file remembers); succeed on the retry."""
    import signal

    value, marker = item
    if marker and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return value


def segfault_on_three(item: int) -> int:
    if item == 3:
        import ctypes

        ctypes.string_at(0)  # reads address 0: SIGSEGV
    return item


def quiet_exit_on_three(item: int) -> int:
    if item == 3:
        os._exit(0)
    return item


def sleep_seconds(item: float) -> float:
    time.sleep(item)
    return item


def timed_sleep(item: float) -> tuple[int, float, float]:
    """Sleep `item` seconds; return where and when it ran: (pid, start, end) in wall-clock seconds."""
    start = time.time()
    time.sleep(item)
    return os.getpid(), start, time.time()


def _explode_on_load() -> None:
    raise ValueError("this argument refuses to be unpickled")


class ExplodesOnLoad:
    """Pickles fine; unpickling it raises (an argument in a worker, or a result in the driver)."""

    def __reduce__(self) -> tuple:
        return (_explode_on_load, ())


def return_unpicklable(item: Any) -> Any:
    return lambda: item  # the result cannot be pickled back to the driver


def return_open_file(item: Any) -> Any:
    """A result that is an open file (this module's source): pickle refuses it; cloudpickle sent it
    as a StringIO of its contents."""
    return open(__file__)  # noqa: SIM115 - the open file is the point


def return_unloadable(item: Any) -> ExplodesOnLoad:
    return ExplodesOnLoad()  # the result pickles in the worker and fails to unpickle in the driver


def kill_self_with_big_payload(item: tuple[int, bytes]) -> int:
    """Die holding an argument far bigger than a pipe buffer."""
    import signal

    index, payload = item
    if index == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return len(payload)


def raise_or_sleep(item: tuple[int, float]) -> int:
    """Raise at once for a zero delay, else sleep that long: a failure ahead of long pending work."""
    index, delay = item
    if delay == 0:
        raise RuntimeError(f"item {index} refuses")
    time.sleep(delay)
    return index


def raise_soon_or_sleep(item: tuple[int, float]) -> int:
    """Raise after 0.3 s for a zero delay (long enough for items beside it to be running), else sleep."""
    index, delay = item
    if delay == 0:
        time.sleep(0.3)
        raise RuntimeError(f"item {index} refuses")
    time.sleep(delay)
    return index


def nested_pool(item: int) -> Any:
    """Try to start a process pool from inside a worker; returns the refusal message."""
    from ._engine import run

    try:
        run("tiny", backend="futures", workers=2)
    except Exception as exc:  # noqa: BLE001 - the refusal is what the test looks for
        return str(exc)
    return "started"


def blas_threads(item: int) -> dict[str, Any]:
    """The thread limits a worker runs with."""
    from threadpoolctl import threadpool_info

    return {"omp": os.environ.get("OMP_NUM_THREADS"),
            "pools": [info["num_threads"] for info in threadpool_info()]}


def call_item(item: Any) -> Any:
    """Call the item (a function, such as a lambda that only cloudpickle sends)."""
    return item()


def __getattr__(name: str) -> Any:
    # The kit imports pytest: loaded only when a test suite asks for it, never in a worker.
    if name == "BackendSuite":
        from ._kit import BackendSuite

        return BackendSuite
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
