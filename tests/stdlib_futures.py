"""CPython's own concurrent.futures test cases, run against runners.Executor on one back-end.

    python tests/stdlib_futures.py BACKEND

The cases come from the running interpreter's installed `test` package (none of their code is copied
here): the executor, wait, as_completed and shutdown mixins, as CPython builds them for its own
executors with `create_executor_tests`. What does not apply is skipped with the reason, listed in
SKIPS (and in the README's back-end table). The last line printed is a JSON summary, which
tests/test_executor_stdlib.py reads.
"""

from __future__ import annotations

import json
import sys
import unittest

from test.test_concurrent_futures import executor, test_as_completed, test_shutdown, test_wait, util

import runners

# Cases that cannot apply to runners.Executor, on every back-end.
BY_NAME = ("the case runs a child interpreter that imports the executor from concurrent.futures by its "
           "class name; tests/test_executor.py checks the same exit behaviour for runners.Executor")
SKIPS = {
    "test_interpreter_shutdown": BY_NAME,
    "test_submit_after_interpreter_shutdown": BY_NAME,
    "test_hang_gh83386": BY_NAME,
}
# Cases that cannot apply on one back-end: back-end -> case -> why.
BACKEND_SKIPS = {
    "serial": {
        "test_map_timeout": "serial runs one batch at a time on its one worker, and the engine's batcher "
        "puts items 1 and 2 (a 0-second and a 6-second sleep) in one batch, so item 1's value comes with "
        "item 2's, "
        "after the timeout (as ProcessPoolExecutor.map with chunksize=2 would); map(..., chunksize=1) "
        "gives each value as it comes",
    },
}
# Back-ends started once for the whole run (their start takes seconds), shared by every case's
# executor; the executor then has the back-end's worker count.
SHARED = {"ray", "dask"}
MIXINS = (executor.ExecutorTest, test_wait.WaitTests, test_as_completed.AsCompletedTests,
          test_shutdown.ExecutorShutdownTest)


def executor_type(backend: str, shared: runners.Backend | None) -> type:
    """An Executor class with the stdlib's constructor signature, as the mixins call it."""

    class RunnersExecutor(runners.Executor):
        def __init__(self, max_workers: int | None = None, **kwargs: object) -> None:
            if shared is not None:
                # A started back-end has its own workers; a bad count must still be refused.
                bad = max_workers is not None and max_workers <= 0
                super().__init__(shared, max_workers=max_workers if bad else None, **kwargs)
            else:
                super().__init__(backend, max_workers=max_workers, **kwargs)

    RunnersExecutor.__name__ = RunnersExecutor.__qualname__ = f"Runners{backend.title()}Executor"
    return RunnersExecutor


def suite(backend: str, shared: runners.Backend | None) -> unittest.TestSuite:
    mixin = type(f"Runners{backend.title()}Mixin", (util.ExecutorMixin,),
                 {"executor_type": executor_type(backend, shared),
                  "worker_count": shared.workers if shared is not None else util.ExecutorMixin.worker_count})
    made: dict[str, object] = {"__name__": __name__}
    for cases in MIXINS:
        util.create_executor_tests(made, cases, executor_mixins=(mixin,))
    loaded = unittest.TestSuite()
    for name, cls in made.items():
        if name == "__name__":
            continue
        for test, reason in {**SKIPS, **BACKEND_SKIPS.get(backend, {})}.items():
            if hasattr(cls, test):
                setattr(cls, test, unittest.skip(reason)(getattr(cls, test)))
        loaded.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(cls))
    return loaded


def main(backend: str) -> int:
    shared = None
    if backend in SHARED:
        shared = runners.load_backend(backend)(None, 2)
        shared.start()
    try:
        result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite(backend, shared))
    finally:
        if shared is not None:
            shared.shutdown()
    print(json.dumps({
        "ran": result.testsRun,
        "failed": [test.id() for test, _ in result.failures + result.errors],
        "skipped": {test.id().rsplit(".", 1)[-1]: reason for test, reason in result.skipped},
    }))
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
