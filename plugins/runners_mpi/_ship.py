"""A task in a loose `.py` file that only the driver's machine has (`runners exec mytask.py:func`) reaches
the ranks of a job the back-end starts itself: the driver sends the sources of the modules that
`loose_modules` finds once, at start-up, and each rank writes them into a scratch folder of its own, last
on its sys.path. Under the user's own mpiexec every rank loads the task itself, from the path it was given.
"""

from __future__ import annotations

import atexit
import importlib
import shutil
import sys
from pathlib import Path

from runners.backend import loose_modules, scratch_folder

Modules = list[tuple[str, str]]  # (path relative to a sys.path folder, source)


def loose_sources() -> Modules:
    """The source files of the driver's loose modules: a module's file, or every `.py` file of a package."""
    found = []
    for path in loose_modules():
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        found += [(str(file.relative_to(path.parent)), file.read_text()) for file in files]
    return found


def install(modules: Modules) -> None:
    """Make `modules` importable in this rank where it cannot import them already: last on its sys.path,
    so that a host that has the file (the driver's, a shared folder) imports it from where it is, and its
    `__file__` (data files beside it, say) means there what it means in the driver."""
    if not modules:
        return
    folder = Path(scratch_folder("mpicode"))
    atexit.register(shutil.rmtree, folder, True)  # an aborted rank's folder: the next run's sweep's
    for relative, source in modules:
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(source)
    sys.path.append(str(folder))
    importlib.invalidate_caches()
