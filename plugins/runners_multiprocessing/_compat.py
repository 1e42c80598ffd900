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

    def _get_sentinels(self) -> list[Any]:
        """What wakes the pool's worker-handler thread, besides its workers' ends: only its change
        notifier, as ThreadPool's (3.11-3.13). Pool's own also waits on the result pipe, which stays
        readable until the result thread has read a result, so the handler spins through its loop
        for every result that comes back: 10-16 ms of the driver's CPU, beside the work, on a 0.6-s
        run of 16 results. The notifier already says when the last task is done (`_PoolCache`) or
        the pool's state changes, which is all the handler waits for."""
        return [self._change_notifier._reader]


def keep_descriptor_open(connection: Any) -> int:
    """The descriptor of a Connection inherited by a worker, kept open for the worker's life without
    a finaliser that would close it: the Connection forgets it (`_handle`, 3.11-3.13)."""
    descriptor = connection.fileno()
    connection._handle = None
    return descriptor
