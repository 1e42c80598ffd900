"""A batch's results store: one JSON line per finished run, the lock on its folder, and reading it back.

Every record is written with one `os.write` of the whole line and fsynced before the next run starts,
so a crash or a SIGKILL leaves at most one torn last line (dropped on the next run); a write that fails
(a full disk, a file-size limit) is cut back to the last whole record before the error is raised, so
the file never holds half a record followed by more. The folder is locked for as long as a batch
writes to it: an advisory POSIX lock (`lockf`), which the kernel drops when the holding process dies
and which forked workers do not inherit, so a killed batch never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from ._errors import ConfigError, RunnersError

RESULTS = "results.jsonl"
LOCK = ".lock"
NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class StoreFull(RunnersError):
    """The results file could not grow (no space, quota or file-size limit); finished records are kept."""


def read_results(path: str | Path, repair: bool = False) -> list[dict[str, Any]]:
    """The records of a results file. A torn last line (a killed run) is ignored, and cut off if `repair`.

    A line that is not JSON before the last one means the file was damaged, not interrupted: that is
    an error naming the file and the line.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise RunnersError(f"{path}: cannot read the results file ({exc.strerror or exc})") from None
    records: list[dict[str, Any]] = []
    good_end = position = 0
    for number, line in enumerate(data.split(b"\n"), start=1):
        end = position + len(line) + 1
        if end > len(data):  # the piece after the last newline: empty, or a torn write
            break
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            if end < len(data):
                raise RunnersError(f"{path}:{number}: not a JSON record; the results file is damaged "
                                   "before its end (an interrupted run only tears the last line): "
                                   "repair or remove that line, or start afresh with `runners batch "
                                   "--fresh`") from None
            break
        records.append(record)
        good_end = position = end
    if repair and good_end < len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return records


class ResultsStore:
    """Appends records to a results file, each one whole and on disk before `append` returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.written = 0

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, default=repr) + "\n").encode()
        end = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)  # a SIGKILL after this line leaves the record on disk
        except OSError as exc:
            os.ftruncate(self._fd, end)  # no half record: the file ends with the last whole one
            if exc.errno in NO_SPACE:
                raise StoreFull(f"{self.path}: {exc.strerror.lower()} while writing a record; the "
                                f"{self.written} record(s) of this run and all earlier ones are kept: "
                                "free some space and run the same command again to resume") from None
            raise RunnersError(f"{self.path}: cannot write a record ({exc.strerror or exc})") from None
        self.written += 1

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FolderLock:
    """An exclusive advisory lock on a batch's output folder, held while the batch writes to it."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                os.close(fd)
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ConfigError(f"output folder {str(self.path.parent)!r} is in use by another runners "
                              f"batch (pid {holder}); wait for it to finish, or choose another --out"
                              ) from None
        with contextlib.suppress(OSError):  # the pid is a courtesy: a full disk must not stop the lock
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)  # the pid of a process that no longer holds it would mislead
            os.close(self._fd)  # closing drops the lock
            self._fd = None


__all__ = ["LOCK", "RESULTS", "FolderLock", "ResultsStore", "StoreFull", "read_results"]
