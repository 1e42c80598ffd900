"""The one error hierarchy of runners: every back-end reports through these types."""

from __future__ import annotations

import reprlib
from typing import Any


class RunnersError(Exception):
    """Base of every error runners raises on purpose; the CLI exits 1 on it."""

    exit_code = 1


class ConfigError(RunnersError, ValueError):
    """Bad input (config file, flag, name, value), found before any work starts; the CLI exits 2.
    Also a ValueError, as Python's own bad-argument errors are (`ProcessPoolExecutor(max_workers=0)`).

    `key` is the key path of the bad value (`params.samples`, `backend.start_method`, `workers`),
    where one is to blame, so that the config reader can say which file or flag the value came from.
    """

    exit_code = 2
    key: str | None = None

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        if key is not None:
            self.key = key

    def __reduce__(self) -> tuple:
        return (type(self), (str(self), self.key))


class BackendNotFound(ConfigError):
    """No back-end is registered under the requested name."""

    key = "backend"


class BackendUnavailable(ConfigError):
    """The back-end is registered but its optional library is not installed."""

    key = "backend"


class TaskNotFound(ConfigError):
    """No task is registered under the requested name, it is no `module:attr` or file path, or the
    module or file that defines it fails to import (a syntax error, an exception at import)."""

    key = "task"


class NotPicklable(ConfigError):
    """The task's function or an item cannot be sent to another process."""

    key = "task"


class DriverInterrupt(BaseException):
    """The driver is being stopped from outside the items (SIGTERM, the run's time limit), like Ctrl-C.

    A BaseException so that no `except Exception` on the way out swallows it, and never an item's failure:
    where items run in the driver (serial), it must unwind the run, not be reported as the item's error.
    """


class RemoteTraceback(Exception):
    """Carries a traceback formatted in the worker, so it shows as the cause of the local error."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


class TaskError(RunnersError):
    """An item raised: `exception` is the original exception, with the worker's traceback as its cause."""

    def __init__(self, exception: BaseException, remote_traceback: str, index: int, item: Any,
                 where: str = "") -> None:
        self.exception = exception
        self.remote_traceback = remote_traceback
        self.index = index
        self.item = item
        self.where = where
        place = f" on {where}" if where else ""
        super().__init__(
            f"item {index} ({short_repr(item)}) raised {type(exception).__name__}: {exception}{place}"
        )


class TaskStepError(TaskError):
    """The task's own code outside the items raised: its `split`, `combine` or `check` (`step`)."""

    def __init__(self, exception: BaseException, traceback: str, task: str, step: str) -> None:
        super().__init__(exception, traceback, -1, None)
        self.step = step
        self.args = (f"task {task!r}: its {step} raised {type(exception).__name__}: "
                     f"{first_line(exception)}",)


class WorkerLost(RunnersError):
    """A worker died (signal, exit, lost node) while it held items; `items` are their indices.

    `exact` False: the back-end cannot tell which items the dead worker held (a broken pool fails
    every batch in flight), and `items` are all those it may have held: "it held one of items ..."."""

    def __init__(self, reason: str, backend: str, items: list[int] | None = None,
                 host: str | None = None, exitcode: int | None = None, exact: bool = True) -> None:
        self.reason = reason
        self.backend = backend
        self.items = list(items or [])
        self.host = host
        self.exitcode = exitcode
        self.exact = exact
        which = "items" if exact or len(self.items) == 1 else "one or more of items"
        held = f"; it held {which} {_span(self.items)}" if self.items else ""
        where = f" on {host}" if host else ""
        super().__init__(f"a {backend} worker{where} was lost: {reason}{held}")

    def __reduce__(self) -> tuple:
        return (type(self), (self.reason, self.backend, self.items, self.host, self.exitcode, self.exact))


class ItemTimeout(RunnersError):
    """An item ran longer than its time limit; the worker running it was stopped."""

    def __init__(self, index: int, limit: float, backend: str = "") -> None:
        self.index = index
        self.limit = limit
        self.backend = backend
        super().__init__(f"item {index} ran longer than its limit of {limit:g} s; its worker was stopped")

    def __reduce__(self) -> tuple:
        return (type(self), (self.index, self.limit, self.backend))


class RunTimeout(RunnersError):
    """The run's items took longer than its time limit; pending work was cancelled, workers stopped."""

    def __init__(self, limit: float, finished: int, total: int | None, backend: str = "") -> None:
        self.limit = limit
        self.finished = finished
        self.total = total
        self.backend = backend
        of = f" of {total}" if total is not None else ""
        super().__init__(
            f"the run took longer than its limit of {limit:g} s (run_timeout) with {finished}{of} items "
            f"finished; pending work was cancelled and the {backend} back-end shut down"
        )

    def __reduce__(self) -> tuple:
        return (type(self), (self.limit, self.finished, self.total, self.backend))


class FailedItems(RunnersError):
    """Items failed in a run that was told to go on (fail_fast: false); `errors` lists the failures,
    `unfinished` the items of the batches given up, and `results` maps the index of every item
    that did finish to its value."""

    def __init__(self, errors: list[RunnersError], total: int, unfinished: list[range] | None = None) -> None:
        self.errors = list(errors)
        self.unfinished = list(unfinished or [])
        self.results: dict[int, Any] = {}
        lines = "\n".join(f"  - {e}" for e in self.errors[:20])
        more = f"\n  ... and {len(self.errors) - 20} more" if len(self.errors) > 20 else ""
        super().__init__(f"{len(self.errors)} of {total} batches failed; the others finished:\n{lines}{more}")


def signal_name(exitcode: int | None) -> str:
    """How a process ended, from its exit code: 'SIGKILL' for -9, 'EXIT(3)' for 3, 'unknown' for None."""
    import signal

    if exitcode is None:
        return "unknown"
    if exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
    return f"EXIT({exitcode})"


def short_repr(value: Any, width: int = 60) -> str:
    """repr(value), cut to `width` characters with '...' where longer.

    It looks at no more than a few levels and elements of a container, so a value that expands to
    billions of elements (YAML aliases) or holds itself costs microseconds: every repr of a user's
    value in a message goes through here, never through `!r`.
    """
    shape = reprlib.Repr()
    shape.maxlevel, shape.maxstring, shape.maxother, shape.maxlong = 3, width, width, width
    try:
        text = shape.repr(value)
    except Exception:  # noqa: BLE001 - a user's __repr__, or an int too long to print
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= width else text[: width - 3] + "..."


def first_line(exception: BaseException, width: int = 200) -> str:
    """The first line of an exception's message, cut to `width`: for one-line errors."""
    lines = str(exception).strip().splitlines() or [""]
    return lines[0] if len(lines[0]) <= width else lines[0][: width - 3] + "..."


def _span(indices: list[int]) -> str:
    if len(indices) > 6:
        return f"{indices[0]}..{indices[-1]} ({len(indices)} items)"
    return ", ".join(map(str, indices))
