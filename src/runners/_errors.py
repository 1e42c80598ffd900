"""The one error hierarchy of runners: every back-end reports through these types."""

from __future__ import annotations

from typing import Any


class RunnersError(Exception):
    """Base of every error runners raises on purpose; the CLI exits 1 on it."""

    exit_code = 1


class ConfigError(RunnersError):
    """Bad input (config file, flag, name, value), found before any work starts; the CLI exits 2."""

    exit_code = 2


class BackendNotFound(ConfigError):
    """No back-end is registered under the requested name."""


class BackendUnavailable(ConfigError):
    """The back-end is registered but its optional library is not installed."""


class TaskNotFound(ConfigError):
    """No task is registered under the requested name, and it is no `module:attr` or file path."""


class NotPicklable(ConfigError):
    """The task's function or an item cannot be sent to another process."""


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
            f"item {index} ({_short(item)}) raised {type(exception).__name__}: {exception}{place}"
        )


class WorkerLost(RunnersError):
    """A worker died (signal, exit, lost node) while it held items; `items` are their indices."""

    def __init__(self, reason: str, backend: str, items: list[int] | None = None,
                 host: str | None = None, exitcode: int | None = None) -> None:
        self.reason = reason
        self.backend = backend
        self.items = list(items or [])
        self.host = host
        self.exitcode = exitcode
        held = f"; it held items {_span(self.items)}" if self.items else ""
        where = f" on {host}" if host else ""
        super().__init__(f"a {backend} worker{where} was lost: {reason}{held}")


class ItemTimeout(RunnersError):
    """An item ran longer than its time limit."""

    def __init__(self, index: int, limit: float) -> None:
        self.index = index
        self.limit = limit
        super().__init__(f"item {index} ran longer than its limit of {limit:g} s")


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _span(indices: list[int]) -> str:
    if len(indices) > 6:
        return f"{indices[0]}..{indices[-1]} ({len(indices)} items)"
    return ", ".join(map(str, indices))
