"""The driver's own code, which the hosts of a cluster lack.

A task given as a file (`runners exec mytask.py:func`), and the files beside it that it imports, exist
only on the driver's machine. The task's function is pickled by reference (module and name), so a worker
on another host cannot unpickle it unless that module reaches it first. Each distributed back-end sends
such modules over its own transport (Ray's runtime_env `py_modules`, Dask's `upload_file`, MPI's message
at start-up); which modules those are is decided here, once, so that every back-end ships the same code.
"""

from __future__ import annotations

import importlib.metadata
import site
import sys
import sysconfig
from pathlib import Path
from types import ModuleType


def loose_modules() -> list[Path]:
    """The top-level modules imported in this process that other hosts cannot be expected to have: each
    a `.py` file, or a package's folder, that is not installed: outside the interpreter's library folders
    (standard library, site-packages) and the folders their `.pth` files add (editable installs), and
    provided by no distribution. (What is installed, the user installs on every host.) `__main__` is
    left out: cloudpickle sends its functions by value.

    A module comes after those it imported as it ran (the import system moves a module to the end of
    sys.modules once it has run), so a transport that imports each file as it arrives finds its imports
    already there.
    """
    library = installed_folders()
    found: dict[Path, str] = {}
    for name, module in list(sys.modules.items()):
        path = _source(module) if "." not in name and name != "__main__" else None
        if path is not None and not any(path.is_relative_to(folder) for folder in library):
            found.setdefault(path, name)
    declared = _declared_top_levels() if found else set()
    return [path for path, name in found.items() if name not in declared]


def installed_folders() -> set[Path]:
    """The folders a fresh interpreter of this environment imports from, wherever it starts: the standard
    library, site-packages, and the folders that `.pth` files there add (how editable installs work)."""
    sites = {Path(sysconfig.get_path(key)).resolve() for key in ("purelib", "platlib")}
    if site.ENABLE_USER_SITE:
        sites.add(Path(site.getusersitepackages()).resolve())
    folders = {Path(sysconfig.get_path(key)).resolve() for key in ("stdlib", "platstdlib")} | sites
    for pth in (file for folder in sites for file in sorted(folder.glob("*.pth"))):
        lines = [line.rstrip() for line in pth.read_text(errors="replace").splitlines()]
        folders |= {(pth.parent / line).resolve() for line in lines if line and
                    not line.startswith(("#", "import ", "import\t")) and (pth.parent / line).is_dir()}
    return folders


def _declared_top_levels() -> set[str]:
    """The top-level names installed distributions declare: how an install whose files stay where they
    are, and no `.pth` folder shows (setuptools' editable finder), is told apart. (Only the declared
    names: `packages_distributions` reads every distribution's file list, most of a second.)"""
    names: set[str] = set()
    for distribution in importlib.metadata.distributions():
        names.update((distribution.read_text("top_level.txt") or "").split())
    return names


def _source(module: ModuleType) -> Path | None:
    """A module's `.py` file, or a regular package's folder; None for what is neither (a built-in or
    extension module, a namespace package, a module made in memory)."""
    file = getattr(module, "__file__", None)
    if not isinstance(file, str):
        return None
    path = Path(file).resolve()
    if hasattr(module, "__path__"):
        return path.parent if path.name == "__init__.py" else None
    return path if path.suffix == ".py" and path.is_file() else None
