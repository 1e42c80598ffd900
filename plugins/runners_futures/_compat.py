"""ProcessPoolExecutor's internals this back-end relies on, in one place: each use says the Python
versions it was checked against, and tests/test_compat.py fails loudly when a new version changes one.
The public replacement is used where it exists (`terminate_workers`, Python 3.14+)."""

from __future__ import annotations

import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any

CHECKED = ((3, 11), (3, 13))  # CPython versions whose executor these were read against


def is_broken(pool: ProcessPoolExecutor) -> bool:
    """Whether a worker's death broke the executor (it then refuses all work): `_broken`, 3.11-3.13."""
    return bool(getattr(pool, "_broken", False))


def worker_processes(pool: ProcessPoolExecutor) -> dict[int, Any]:
    """The executor's worker processes by pid (no public list): `_processes`, 3.11-3.13."""
    return dict(getattr(pool, "_processes", None) or {})


def wait_until_reaped(pool: ProcessPoolExecutor, seconds: float) -> None:
    """Wait for the executor's manager thread, which reaps dead workers: their exit codes read before
    it has raced it (under forkserver the loser reads 255). `_executor_manager_thread`, 3.11-3.13."""
    manager = getattr(pool, "_executor_manager_thread", None)
    if manager is not None:
        manager.join(timeout=seconds)


def terminate_workers(pool: ProcessPoolExecutor) -> None:
    """Stop every worker now, running items included (shutdown() would wait for them)."""
    if hasattr(pool, "terminate_workers"):  # Python 3.14+
        pool.terminate_workers()
        return
    if sys.version_info < (3, 12):
        # 3.11's executor then marks every pending work item failed, and its manager thread dies with
        # InvalidStateError on one whose future the engine already cancelled: drop those first.
        pending = getattr(pool, "_pending_work_items", None) or {}
        for work_id, item in list(pending.items()):
            if item.future.cancelled():
                pending.pop(work_id, None)
    for process in worker_processes(pool).values():
        process.terminate()
