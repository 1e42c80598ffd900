"""multiprocessing's internals this back-end relies on, in one place: each use says the Python
versions it was checked against, and tests/test_compat.py fails loudly when a new version changes one."""

from __future__ import annotations

import multiprocessing.pool
from collections.abc import Callable
from typing import Any

CHECKED = ((3, 11), (3, 13))  # CPython versions whose Pool and Connection these were read against


class RecordingPool(multiprocessing.pool.Pool):
    """A Pool that hands every worker process it makes (replacements too) to `on_new_process`.

    Pool has no public worker list, and its own list drops a dead worker within 0.1 s: too soon to
    read the exit code of one that died at once. Pool makes processes through `self.Process(ctx, ...)`
    (3.11-3.13), which an instance attribute may shadow.
    """

    def __init__(self, *args: Any, on_new_process: Callable[[Any], Any], **kwargs: Any) -> None:
        self.Process = lambda ctx, *a, **kw: on_new_process(ctx.Process(*a, **kw))
        super().__init__(*args, **kwargs)


def keep_descriptor_open(connection: Any) -> int:
    """The descriptor of a Connection inherited by a worker, kept open for the worker's life without
    a finaliser that would close it: the Connection forgets it (`_handle`, 3.11-3.13)."""
    descriptor = connection.fileno()
    connection._handle = None
    return descriptor
