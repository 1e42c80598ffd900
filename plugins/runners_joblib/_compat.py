"""joblib's and loky's internals this back-end relies on, in one place: each use says the versions it
was checked against (CHECKED), tests/test_compat.py fails loudly when a new release changes one, and
pyproject.toml bounds joblib below the next minor release."""

from __future__ import annotations

import os
from pathlib import Path

CHECKED = ("1.4", "1.6")  # the joblib releases (with their vendored loky) these were read against


def stop_reusable_executor() -> None:
    """Stop loky's reusable executor (it keeps its workers after Parallel returns) and joblib's
    memmapping folder with it. With no executor this makes an empty one, which starts no process.
    `joblib.externals.loky.get_reusable_executor`; `terminate()` of joblib's MemmappingExecutor."""
    from joblib.externals.loky import get_reusable_executor

    executor = get_reusable_executor(reuse=True)
    if hasattr(executor, "terminate"):  # joblib's MemmappingExecutor: also cleans its folder
        executor.terminate()
    else:
        executor.shutdown(wait=True)


def unlink_orphaned_loky_semaphores() -> None:
    """Semaphores a killed loky worker held stay in /dev/shm until the interpreter exits; with every
    executor of this process shut down, none of them is in use, so remove them now. loky names them
    `/loky-PID-...` (its `synchronize` module) and CPython's `_multiprocessing.sem_unlink` removes one."""
    import _multiprocessing

    for path in Path("/dev/shm").glob(f"sem.loky-{os.getpid()}-*"):
        try:
            _multiprocessing.sem_unlink("/" + path.name[len("sem."):])
        except OSError:
            pass
