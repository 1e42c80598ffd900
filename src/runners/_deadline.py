"""A time limit on a whole run, enforced by interrupting the driver the way Ctrl-C does.

A run waits inside a back-end (a queue, `ray.wait`, a socket), often in C. Polling for a deadline would
need every back-end to wake up on a timer; instead SIGALRM interrupts whatever the main thread waits on,
exactly like SIGINT, so the path that cancels pending work and stops workers is the same well-tested
unwinding that Ctrl-C takes on every back-end.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ._errors import ConfigError, DriverInterrupt


class Expired(DriverInterrupt):
    """Raised in the main thread when the limit passes; the engine turns it into RunTimeout."""


def check_time_limit(seconds: float | None) -> None:
    """Refuse a limit that cannot be enforced here, before anything starts."""
    if seconds is not None and (threading.current_thread() is not threading.main_thread()
                                or not hasattr(signal, "setitimer")):
        raise ConfigError(
            f"run_timeout: a limit on the whole run interrupts the driver with SIGALRM, which works only "
            f"in the main thread of a POSIX process, and this run is in thread "
            f"{threading.current_thread().name!r}; run it from the main thread, or leave run_timeout unset "
            "and bound the run from your own code"
        )


@contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise Expired in this (main) thread if the block runs longer than `seconds`; None: no limit."""
    check_time_limit(seconds)
    if seconds is None:
        yield
        return

    def expired(signum: int, frame: object) -> None:
        raise Expired

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)  # disarm before restoring: no late alarm can land
        finally:  # even if the alarm fired just now, inside this block
            signal.signal(signal.SIGALRM, previous)
