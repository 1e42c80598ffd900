"""One thread for each BLAS and OpenMP runtime in a worker process, without the worker paying for it.

Workers that each run a thread per core oversubscribe the cores the other workers use, so pool workers
run one BLAS or OpenMP thread each (as joblib's do). A forked worker inherits the driver's runtimes,
already started with a thread per core, and limiting them cost more than it seemed (benchmarks/README.md):

- finding them: importing threadpoolctl and scanning every loaded library took ~10 ms of CPU in each
  new worker. The driver does it once, and forked workers reuse it while they map the same libraries.
- limiting them: `openblas_set_num_threads` in a forked child starts an OpenBLAS thread there that spins
  for ~0.1 s of CPU, on the cores the work needs. So the driver runs one thread of each runtime itself
  while its forking back-end is started (`before_forking_workers`) and restores them at shut-down: the
  child inherits one thread and has nothing to set.
- setting them in the driver: OpenBLAS stops its thread pool before every fork (its own
  pthread_atfork handler), and its next `openblas_set_num_threads`, whatever the count, starts the
  pool again, whose new thread spins for 2^28 cycles (~0.1 s of CPU) before it sleeps. Every run
  forks, so limiting at start and restoring at shut-down each started a spinning thread in the
  driver, which `Pool.map` never does. So a count is set as OpenBLAS's fork handler leaves it: a
  pool that was stopped is stopped again at once (`_set_threads`), and starts when next needed. Like
  a fork, that must not happen while another thread of the driver is inside a BLAS call.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

# What threadpoolctl limits: BLAS and OpenMP runtimes (numpy's wheels bundle scipy_openblas).
LIBRARIES = ("openblas", "libmkl", "libblis", "flexiblas", "libgomp", "libiomp", "libomp")

_found: tuple[str, list[Any]] | None = None  # the libraries mapped, and threadpoolctl's controllers of them


def _mapped() -> str | None:
    """The runtimes mapped into this process, one path a line ('' when there are none; None where
    there is no /proc/self/maps to read). Reading the maps takes about half a millisecond; only the
    lines that name a runtime are parsed (parsing all ~250 took as long again)."""
    try:
        with open("/proc/self/maps") as maps:
            text = maps.read()
    except OSError:  # not Linux: let threadpoolctl look, every time
        return None
    paths = set()
    for name in LIBRARIES:
        at = text.find(name)
        while at != -1:
            end = text.find("\n", at)
            end = len(text) if end == -1 else end
            paths.add(text[text.rfind("\n", 0, at) + 1:end].split()[-1])
            at = text.find(name, end)
    return "\n".join(sorted(paths))


def _controllers() -> list[Any]:
    """threadpoolctl's controllers of the runtimes loaded here: those found before this process was
    forked while it maps the same libraries, else found again."""
    global _found
    libraries = _mapped()
    if libraries == "":
        return []
    if libraries is None or _found is None or _found[0] != libraries:
        from threadpoolctl import ThreadpoolController

        _found = (libraries or "", ThreadpoolController().lib_controllers)
    return _found[1]


def _stop_again_if_stopped(runtime: Any) -> Callable[[], Any] | None:
    """For an OpenBLAS runtime (pthreads) whose thread pool is stopped now (a fork stops it): the
    function of OpenBLAS's own fork handler that stops it again. None otherwise, or where the library
    does not export them (then a count is set as threadpoolctl sets it, spin included)."""
    if runtime.internal_api != "openblas" or getattr(runtime, "threading_layer", None) != "pthreads":
        return None
    try:
        library = ctypes.CDLL(runtime.filepath)  # already loaded: the same handle
        running = ctypes.c_int.in_dll(library, "blas_server_avail").value
        stop = library.blas_thread_shutdown_
    except (OSError, ValueError, AttributeError):
        return None
    return None if running else stop


def _set_threads(runtime: Any, threads: int) -> None:
    """`runtime.set_num_threads(threads)`, leaving an OpenBLAS thread pool that was stopped stopped,
    rather than started with a thread that spins (see the module's docstring)."""
    stop_again = _stop_again_if_stopped(runtime)
    runtime.set_num_threads(threads)
    if stop_again is not None:
        stop_again()


def one_thread_each() -> list[tuple[Any, int]]:
    """Limit every runtime here that runs more than one thread to one; return those, with their counts."""
    changed = []
    for runtime in _controllers():
        threads = runtime.num_threads
        if threads != 1:
            _set_threads(runtime, 1)
            changed.append((runtime, threads))
    return changed


def before_forking_workers() -> Callable[[], None]:
    """Call in the driver before starting worker processes whose initializer is `prepare_worker`, and
    call what it returns once they are gone (at shut-down): until then the driver's own runtimes run one
    thread each, which forked workers inherit, so they have nothing to limit. The driver's cores are
    the workers' meanwhile. Cheap when no runtime is loaded."""
    changed = one_thread_each()

    def restore() -> None:
        for runtime, threads in changed:
            _set_threads(runtime, threads)

    return restore
