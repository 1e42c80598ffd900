"""For people who write back-ends: the contract, the pieces every back-end shares, and the errors a
back-end raises or reports. A plugin imports from here and nowhere else in runners.

The contract is `Backend` (implement `start` and `run`; register cleanups with `on_shutdown`). A batch
runs in a worker with `run_batch`; back-ends whose items run in other processes send it pickled
(`pickle_batch` in the driver, `run_pickled_batch` in the worker) and report whatever keeps a batch from
travelling with `transport_failure`. `in_flight` keeps a bounded number of batches in flight for any
handle that can be waited on (`Futures` for concurrent.futures). `runners.testing.BackendSuite` runs a
back-end through the cases every back-end must pass, and checks the guarantees its class declares.
A back-end whose workers run on other hosts sends them `loose_modules`, the driver's own code they lack.
"""

from ._backend import LOST_ITEMS, Backend, Batch, BatchResult, ItemFailure, NoOptions, PackedValues, Parcel
from ._backend import usable_cpus as usable_cpus
from ._errors import (
    BackendUnavailable,
    ConfigError,
    DriverInterrupt,
    ItemTimeout,
    RunnersError,
    WorkerLost,
    signal_name,
)
from ._inflight import WAIT_SECONDS, Arrivals, Feed, Futures, Handles, in_flight
from ._loose import installed_folders, loose_modules
from ._peer import check_listen_address, split_address, what_answers
from ._registry import load_backend
from ._scratch import scratch_folder
from ._signals import keep_signal_handlers
from ._task import param
from ._threadpools import before_forking_workers
from ._transport import BatchNotPicklable, pickle_batch, transport_failure
from ._worker import (
    environment,
    item_failure,
    prepare_worker,
    run_batch,
    run_pickled_batch,
    worker_environment,
)

__all__ = [
    "LOST_ITEMS",
    "WAIT_SECONDS",
    "Arrivals",
    "Backend",
    "BackendUnavailable",
    "Batch",
    "BatchNotPicklable",
    "BatchResult",
    "ConfigError",
    "DriverInterrupt",
    "Feed",
    "Futures",
    "Handles",
    "ItemFailure",
    "ItemTimeout",
    "NoOptions",
    "PackedValues",
    "Parcel",
    "RunnersError",
    "WorkerLost",
    "before_forking_workers",
    "check_listen_address",
    "environment",
    "in_flight",
    "installed_folders",
    "item_failure",
    "keep_signal_handlers",
    "load_backend",
    "loose_modules",
    "param",
    "pickle_batch",
    "prepare_worker",
    "run_batch",
    "run_pickled_batch",
    "scratch_folder",
    "signal_name",
    "split_address",
    "transport_failure",
    "usable_cpus",
    "what_answers",
    "worker_environment",
]
