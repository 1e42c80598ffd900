"""Ctrl-C and SIGTERM in the driver: unwind the run so back-ends shut down, and never hang doing so."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

from ._errors import DriverInterrupt


@contextlib.contextmanager
def keep_signal_handlers() -> Iterator[None]:
    """Around a library's start-up that installs signal handlers of its own (Ray's driver: a SIGTERM
    handler that exits 1, and a C handler that prints a stack dump): the handlers in place before
    are put back after it, so that Ctrl-C and SIGTERM still unwind the run and exit 130 and 143."""
    if threading.current_thread() is not threading.main_thread():
        yield  # handlers can be set only from the main thread, and the library cannot set them either
        return
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in saved.items():
            if handler is not None:  # None: set from C before Python started; leave it
                signal.signal(signum, handler)  # the C-level handler too: Python's own again


class Terminated(DriverInterrupt):
    """SIGTERM arrived: unwind like Ctrl-C (shutting back-ends down), then exit 143."""

    exit_code = 143


class signals_end_the_run:
    """Ctrl-C and SIGTERM unwind the run so back-ends shut down; a second Ctrl-C kills at once.

    An interrupt lands wherever the driver is, possibly inside a pool's own bookkeeping, and a
    shut-down can then wait on a lock that will never be released: past UNWIND_SECONDS a watchdog
    stops the workers and exits with the signal's code, so an interrupted run never hangs.
    """

    UNWIND_SECONDS = 10.0  # a backstop for a wedged shut-down: a normal one (dask: a few s) is quicker

    def __enter__(self) -> None:
        driver = os.getpid()

        def in_a_forked_worker(signum: int) -> bool:
            # A worker forked from the driver has these handlers until it resets them itself; a
            # signal in between (the pool stopping it) must act as it would on a worker: SIGTERM
            # ends it, SIGINT is the driver's to handle.
            if os.getpid() == driver:
                return False
            signal.signal(signum, signal.SIG_DFL if signum == signal.SIGTERM else signal.SIG_IGN)
            if signum == signal.SIGTERM:
                os.kill(os.getpid(), signum)
            return True

        def interrupted(signum: int, frame: object) -> None:
            if in_a_forked_worker(signum):
                return
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            self._watch(130)
            raise KeyboardInterrupt

        def terminated(signum: int, frame: object) -> None:
            if in_a_forked_worker(signum):
                return
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            self._watch(143)
            raise Terminated

        self._previous = (signal.signal(signal.SIGINT, interrupted),
                          signal.signal(signal.SIGTERM, terminated))

    def _watch(self, code: int) -> None:
        def stop_everything() -> None:
            time.sleep(self.UNWIND_SECONDS)
            print(f"runners: shutting down took over {self.UNWIND_SECONDS:g} s; stopping the workers",
                  file=sys.stderr, flush=True)
            import psutil

            children = psutil.Process().children(recursive=True)
            for child in children:
                with contextlib.suppress(psutil.Error):
                    child.kill()
            psutil.wait_procs(children, timeout=5)
            os._exit(code)

        threading.Thread(target=stop_everything, name="runners-unwind-watchdog", daemon=True).start()

    def __exit__(self, *exc_info: object) -> None:
        signal.signal(signal.SIGINT, self._previous[0])
        signal.signal(signal.SIGTERM, self._previous[1])
