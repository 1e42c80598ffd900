"""Temporary folders of a run, named after the process that made them.

A run removes its folders when it shuts down; a runner that is SIGKILLed cannot. The creator's pid in
the name tells a dead run's folder from a live one's, so the next run sweeps them, as SharedArray does
for shared-memory segments. A pid means something only on its own host, in its own PID namespace, and a
temporary folder may be shared by several hosts (MPI ranks on a shared filesystem, containers or a test
bed's hosts sharing /tmp): each folder holds a file that names where it was made, and a run sweeps only
the folders made where it runs. (Not in the name: Ray puts its sockets in such a folder, and a socket's
path must fit in 107 bytes.)
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile

_NAME = re.compile(r"runners-[a-z]+-(\d+)-")
MADE_ON = ".runners-made-on"  # in each folder: where its creator's pid means something (see `_here`)


def scratch_folder(kind: str, within: str | None = None) -> str:
    """A new folder `runners-KIND-PID-XXXXXXXX` in `within` (default TMPDIR), after sweeping the
    folders there that runs which no longer exist left behind here. The caller removes it at shut-down."""
    sweep_scratch(within)
    folder = tempfile.mkdtemp(prefix=f"runners-{kind}-{os.getpid()}-", dir=within)
    with open(os.path.join(folder, MADE_ON), "w") as made_on:
        made_on.write(_here())
    return folder


def sweep_scratch(within: str | None = None) -> list[str]:
    """Remove the scratch folders that processes which ran here, and are gone, made; return their names.
    A folder that does not say where it was made (yet, or by an older runners) is left alone."""
    root = within or tempfile.gettempdir()
    removed = [name for name in dead_owners(root, _NAME) if _made_here(os.path.join(root, name))]
    for name in removed:
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    return removed


def _here() -> str:
    """Where this process's pid means something: the host's name and, on Linux, its PID namespace."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()} {namespace}"


def _made_here(folder: str) -> bool:
    try:
        with open(os.path.join(folder, MADE_ON)) as made_on:
            return made_on.read() == _here()
    except OSError:
        return False


def dead_owners(root: str, name: re.Pattern[str]) -> list[str]:
    """Entries of `root` whose name matches `name`, a pattern whose first group is the pid of the
    process that made the entry, where that process no longer exists."""
    try:
        entries = os.listdir(root)
    except OSError:
        return []
    return [entry for entry in entries
            if (match := name.match(entry)) is not None and not _alive(int(match.group(1)))]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True
