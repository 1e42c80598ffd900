"""Find back-ends and tasks through entry points; import only the one asked for."""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from ._backend import Backend
from ._errors import BackendNotFound, BackendUnavailable, ConfigError, TaskNotFound, first_line, short_repr
from ._task import Task

BACKENDS = "runners.backends"
TASKS = "runners.tasks"


@dataclass(frozen=True)
class Registry:
    """The plugins one entry-point group declares, by name, without importing any of them."""

    group: str
    entries: dict[str, EntryPoint]

    @classmethod
    @functools.cache  # entry points are fixed for a process's life; reading them costs ~10 ms
    def scan(cls, group: str) -> Registry:
        entries: dict[str, EntryPoint] = {}
        for ep in entry_points(group=group):
            if ep.name in entries and entries[ep.name].value != ep.value:
                raise ConfigError(
                    f"two plugins register {group} name {ep.name!r}: {_owner(entries[ep.name])} "
                    f"({entries[ep.name].value}) and {_owner(ep)} ({ep.value}); uninstall one of them"
                )
            entries[ep.name] = ep
        return cls(group, dict(sorted(entries.items())))

    def names(self) -> list[str]:
        return list(self.entries)

    def unknown(self, kind: str, name: str, error: type[ConfigError]) -> ConfigError:
        close = difflib.get_close_matches(name, self.names(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return error(f"unknown {kind} {short_repr(name)}{hint} expected one of [{', '.join(self.names())}]")


def backend_names() -> list[str]:
    """Names of every registered back-end, installed library or not."""
    return Registry.scan(BACKENDS).names()


def task_names() -> list[str]:
    """Names of every registered task."""
    return Registry.scan(TASKS).names()


def load_backend(name: str) -> type[Backend]:
    """The back-end class registered as `name`; raises with the valid names or how to install it."""
    registry = Registry.scan(BACKENDS)
    if name not in registry.entries:
        raise registry.unknown("back-end", name, BackendNotFound)
    try:
        backend = registry.entries[name].load()
    except ImportError as exc:
        raise BackendUnavailable(_install_hint(name, None, str(exc))) from exc
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the whole tool down
        entry = registry.entries[name].value
        raise BackendUnavailable(
            f"back-end {name!r} ({entry}) failed to load: {type(exc).__name__}: {exc}"
        ) from exc
    if not (isinstance(backend, type) and issubclass(backend, Backend)):
        raise ConfigError(f"back-end {name!r} ({registry.entries[name].value}) "
                          "is not a runners.backend.Backend")
    missing = [m for m in backend.requires if importlib.util.find_spec(m) is None]
    if missing:
        raise BackendUnavailable(_install_hint(name, backend.install, f"No module named {missing[0]!r}"))
    return backend


def backend_status(name: str) -> tuple[bool, str]:
    """(available, note) for `runners list`: the install hint when it is not."""
    try:
        load_backend(name)
    except BackendUnavailable as exc:
        return False, str(exc)
    return True, ""


def load_task(ref: str | Task) -> Task:
    """A registered task name, `package.module:attr`, or `path/to/file.py[:attr]`, as a Task."""
    if isinstance(ref, Task):
        return ref
    registry = Registry.scan(TASKS)
    if ref in registry.entries:
        _import(registry.entries[ref].module, ref)  # its failures as config errors; then load() is quick
        return _as_task(registry.entries[ref].load(), ref)
    path, _, attr = ref.rpartition(":") if ":" in ref else (ref, "", "")
    if path.endswith(".py"):
        return _as_task(_from_file(Path(path), attr or None, ref), ref)
    if attr:
        # As `python -m` does: the current folder's modules come first (the `runners` script
        # itself starts with only its own folder on sys.path). Workers get the driver's sys.path.
        here = os.getcwd()
        if here not in sys.path:
            sys.path.insert(0, here)
        module = _import(path, ref)
        if not hasattr(module, attr):
            raise TaskNotFound(f"task {ref!r}: module {path!r} has no attribute {attr!r}")
        return _as_task(getattr(module, attr), ref)
    raise registry.unknown("task", ref, TaskNotFound)


def _from_file(path: Path, attr: str | None, ref: str) -> Any:
    if not path.is_file():
        raise TaskNotFound(f"task {ref!r}: no such file {str(path)!r}")
    # Import it under its own name with its folder on sys.path, so process workers (which get the
    # parent's sys.path) can import it again to unpickle its functions.
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module = _import(path.stem, ref)
    if attr is None:
        found = [v for v in vars(module).values() if isinstance(v, Task)]
        if len(found) != 1:
            raise TaskNotFound(
                f"task {ref!r}: the file defines {len(found)} runners.Task objects; name one as FILE.py:NAME"
            )
        return found[0]
    if not hasattr(module, attr):
        raise TaskNotFound(f"task {ref!r}: {str(path)!r} has no attribute {attr!r}")
    return getattr(module, attr)


def _import(name: str, ref: str) -> ModuleType:
    """Import a task's module. It is input, like a config file: what goes wrong in it (a syntax
    error, an exception, sys.exit) is a config error of one line naming the file and the line."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(f"{exc.name}.")):
            raise TaskNotFound(f"task {short_repr(ref)}: no module named {exc.name!r} in the current "
                               "folder or on sys.path") from None
        failure: BaseException = exc
    except SyntaxError as exc:  # the line is the error's own, not a frame's
        raise TaskNotFound(f"task {short_repr(ref)}: {exc.filename}:{exc.lineno}: "
                           f"{type(exc).__name__}: {exc.msg}") from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - whatever the module's code raised
        failure = exc
    file, line = _raised_at(failure)
    what = f"{type(failure).__name__}: {first_line(failure)}"
    if isinstance(failure, SystemExit):
        what = (f"it calls sys.exit({short_repr(failure.code)}) when imported; put that under "
                "`if __name__ == '__main__':`")
    raise TaskNotFound(f"task {short_repr(ref)}: {file}:{line}: {what} (raised while importing "
                       f"{name})") from None


def _raised_at(exc: BaseException) -> tuple[str, int | None]:
    """The file and line to blame: in the innermost module that was being imported (the task's, or
    one it imports), the deepest line, which may be inside a function that the module called."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    modules = [f for f in frames if f.name == "<module>"]  # module bodies; importlib's are "<frozen"
    if not modules:
        return "?", None
    place = [f for f in frames if f.filename == modules[-1].filename][-1]
    return place.filename, place.lineno


def _as_task(obj: Any, ref: str) -> Task:
    from ._mapping import map_task

    if isinstance(obj, Task):
        return obj
    if callable(obj):
        return map_task(obj, ref)
    raise TaskNotFound(f"task {ref!r} is a {type(obj).__name__}, not a runners.Task or a function")


def _install_hint(name: str, install: str | None, reason: str) -> str:
    return f"back-end {name!r} is not available: {reason}; {install or 'install its package'} to use it"


def _owner(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"distribution {dist.name!r}" if dist is not None else "an unknown distribution"
