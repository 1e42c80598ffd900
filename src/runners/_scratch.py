"""Temporary folders of a run, named after the process that made them.

A run removes its folders when it shuts down; a runner that is SIGKILLed cannot. The creator's pid in
the name tells a dead run's folder from a live one's, so the next run sweeps them, as SharedArray does
for shared-memory segments.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

_NAME = re.compile(r"runners-[a-z]+-(\d+)-")


def scratch_folder(kind: str, within: str | None = None) -> str:
    """A new folder `runners-KIND-PID-XXXXXXXX` in `within` (default TMPDIR), after sweeping the
    folders there that runs which no longer exist left behind. The caller removes it at shut-down."""
    sweep_scratch(within)
    return tempfile.mkdtemp(prefix=f"runners-{kind}-{os.getpid()}-", dir=within)


def sweep_scratch(within: str | None = None) -> list[str]:
    """Remove the scratch folders of processes that are gone; return their names."""
    root = within or tempfile.gettempdir()
    removed = dead_owners(root, _NAME)
    for name in removed:
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    return removed


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
