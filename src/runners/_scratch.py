"""Temporary folders of a run, named after the process that made them and the host it ran on.

A run removes its folders when it shuts down; a runner that is SIGKILLed cannot. The creator's pid in
the name tells a dead run's folder from a live one's, so the next run sweeps them, as SharedArray does
for shared-memory segments. A pid means something only on its own host (in its own PID namespace), and
a temporary folder may be shared by several hosts (MPI ranks on a shared filesystem): a run sweeps only
the folders its own host made.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tempfile


def scratch_folder(kind: str, within: str | None = None) -> str:
    """A new folder `runners-KIND-PID-HOST-XXXXXXXX` (HOST: see `_host`) in `within` (default TMPDIR),
    after sweeping the folders there that runs of this host which no longer exist left behind. The
    caller removes it at shut-down."""
    sweep_scratch(within)
    return tempfile.mkdtemp(prefix=f"runners-{kind}-{os.getpid()}-{_host()}-", dir=within)


def sweep_scratch(within: str | None = None) -> list[str]:
    """Remove the scratch folders that processes of this host made and that are gone; return their names."""
    root = within or tempfile.gettempdir()
    removed = dead_owners(root, re.compile(rf"runners-[a-z]+-(\d+)-{_host()}-"))
    for name in removed:
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    return removed


def _host() -> str:
    """Where this process's pid has its meaning, in six characters: the host's name and, on Linux, its
    PID namespace (containers, or a test bed's hosts, may share a name and a folder). Short, since Ray
    puts its sockets in such a folder, and a socket's path must fit in 107 bytes."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return hashlib.blake2s(f"{socket.gethostname()} {namespace}".encode(), digest_size=3).hexdigest()


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
