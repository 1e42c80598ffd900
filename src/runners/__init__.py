"""runners: the same workloads on interchangeable parallel back-ends, measured side by side.

The public API is what this module exports; plugins and tasks use nothing else.
"""

from ._backend import (
    Backend,
    Batch,
    BatchResult,
    ItemFailure,
    NoOptions,
    PackedValues,
    Parcel,
    usable_cpus,
)
from ._config import job_from_sources, parse_sets, read_yaml
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
    signal_name,
)
from ._inflight import Feed, Futures, Handles, in_flight
from ._matrix_run import load_matrix, read_results, run_matrix
from ._memory import PeakMemory, tree_mb
from ._peer import split_address, what_answers
from ._registry import backend_names, backend_status, load_backend, load_task, task_names
from ._report import make_report
from ._scratch import scratch_folder, sweep_scratch
from ._shared import SharedArray
from ._signals import keep_signal_handlers
from ._task import Task, Verdict, item_seed, param
from ._transport import pickle_batch, transport_failure
from ._worker import (
    item_failure,
    portable_exception,
    prepare_worker,
    run_batch,
    run_pickled_batch,
    worker_environment,
)

__all__ = [
    "Backend",
    "BackendNotFound",
    "BackendUnavailable",
    "Batch",
    "BatchResult",
    "ConfigError",
    "DEFAULT_SEED",
    "DriverInterrupt",
    "FailedItems",
    "ItemFailure",
    "ItemTimeout",
    "Job",
    "NoOptions",
    "NotPicklable",
    "PeakMemory",
    "PackedValues",
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
    "Feed",
    "Futures",
    "Handles",
    "Parcel",
    "in_flight",
    "item_failure",
    "pickle_batch",
    "transport_failure",
    "item_seed",
    "job_from_sources",
    "keep_signal_handlers",
    "load_backend",
    "load_matrix",
    "load_task",
    "make_report",
    "param",
    "parse_sets",
    "plan",
    "portable_exception",
    "prepare_worker",
    "read_results",
    "read_yaml",
    "run",
    "run_batch",
    "run_matrix",
    "run_on",
    "run_pickled_batch",
    "scratch_folder",
    "signal_name",
    "split_address",
    "sweep_scratch",
    "task_names",
    "tree_mb",
    "usable_cpus",
    "what_answers",
    "worker_environment",
]
