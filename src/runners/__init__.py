"""runners: the same workloads on interchangeable parallel back-ends, measured side by side.

For people who run work: what this module exports is their API, and tasks use nothing else. Plugin
authors import `runners.backend` (the back-end contract and the pieces back-ends share) and test with
`runners.testing.BackendSuite`; the CLI's internals stay private.
"""

from ._config import job_from_sources
from ._engine import DEFAULT_SEED, Job, Plan, RunRecord, Timings, plan, run, run_on
from ._errors import (
    BackendNotFound,
    BackendUnavailable,
    ConfigError,
    DriverInterrupt,
    FailedItems,
    ItemTimeout,
    NotPicklable,
    RemoteTraceback,
    RunnersError,
    RunTimeout,
    TaskError,
    TaskNotFound,
    WorkerLost,
)
from ._executor import Executor
from ._matrix_run import load_matrix, read_results, run_matrix
from ._memory import PeakMemory, tree_mb
from ._registry import backend_names, backend_status, load_backend, load_task, task_names
from ._report import make_report
from ._scratch import scratch_folder, sweep_scratch
from ._task import Task, Verdict, item_seed, param

__all__ = [
    "BackendNotFound",
    "BackendUnavailable",
    "ConfigError",
    "DEFAULT_SEED",
    "DriverInterrupt",
    "Executor",
    "FailedItems",
    "ItemTimeout",
    "Job",
    "NotPicklable",
    "PeakMemory",
    "Plan",
    "RemoteTraceback",
    "RunRecord",
    "RunTimeout",
    "RunnersError",
    "SharedArray",
    "Task",
    "TaskError",
    "TaskNotFound",
    "Timings",
    "Verdict",
    "WorkerLost",
    "backend_names",
    "backend_status",
    "item_seed",
    "job_from_sources",
    "load_backend",
    "load_matrix",
    "load_task",
    "make_report",
    "param",
    "plan",
    "read_results",
    "run",
    "run_matrix",
    "run_on",
    "scratch_folder",
    "sweep_scratch",
    "task_names",
    "tree_mb",
]


def __getattr__(name: str) -> object:
    # SharedArray needs numpy, which costs ~50 ms to import and maps OpenBLAS into every worker
    # (which then pays threadpoolctl's scan): loaded when first asked for, not with runners.
    if name == "SharedArray":
        from ._shared import SharedArray

        return SharedArray
    raise AttributeError(f"module 'runners' has no attribute {name!r}")
