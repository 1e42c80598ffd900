"""A task in a loose `.py` file that only the driver's machine has (`runners exec mytask.py:func`) reaches
the ranks of a job the back-end starts itself: the driver sends the sources of such files once, at
start-up, and each rank writes them into a scratch folder of its own, last on its sys.path (as Ray's
`py_modules` and Dask's `upload_file` do for their workers). Under the user's own mpiexec every rank loads
the task itself, from the path it was given.
"""

from __future__ import annotations

import atexit
import importlib
import shutil
import sys
import sysconfig
from pathlib import Path

from runners.backend import scratch_folder

Modules = list[tuple[str, str]]  # (module name, source)


def loose_modules() -> Modules:
    """The top-level modules imported here from a plain `.py` file outside the installed packages and the
    standard library: a task file, and the files beside it that it imports."""
    installed = {Path(p).resolve() for p in sysconfig.get_paths().values()}
    found = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if "." in name or name == "__main__" or hasattr(module, "__path__") or not file or \
                not file.endswith(".py"):
            continue  # packages (the user installs those on every host), and the script itself
        path = Path(file).resolve()
        if not any(path.is_relative_to(root) for root in installed) and path.is_file():
            found.append((name, path.read_text()))
    return found


def install(modules: Modules) -> None:
    """Make `modules` importable in this rank where it cannot import them already: last on its sys.path,
    so that a host that has the file (the driver's, a shared folder) imports it from where it is, and its
    `__file__` (data files beside it, say) means there what it means in the driver."""
    if not modules:
        return
    folder = Path(scratch_folder("mpicode"))
    atexit.register(shutil.rmtree, folder, True)  # an aborted rank's folder: the next run's sweep's
    for name, source in modules:
        (folder / f"{name}.py").write_text(source)
    sys.path.append(str(folder))
    importlib.invalidate_caches()
