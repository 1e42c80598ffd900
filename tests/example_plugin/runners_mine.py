"""A back-end plugin: a process pool of the standard library, registered as `mine`."""

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from runners.backend import (
    Backend,
    Futures,
    in_flight,
    param,
    pickle_batch,
    prepare_worker,
    run_pickled_batch,
)


@dataclass(frozen=True)
class MyOptions:
    in_flight: int | None = param(None, min=1, help="batches sent at a time; null: 2 per worker")


class MyBackend(Backend):
    name = "mine"
    Options = MyOptions  # validated strictly from YAML and --set backend.X=V
    requires = ()  # modules it imports in start(); if one is missing, runners says:
    install = "pip install runners-mine"  # how to get them
    separate_processes = True  # capabilities and guarantees are data, checked by runners.testing
    pickles_items = True
    lost_items = "in flight"  # a dead worker breaks the pool: every batch in flight is lost
    stops_running_items = False  # the pool's shutdown waits for running items

    def start(self):
        self._pool = ProcessPoolExecutor(self.workers, initializer=prepare_worker)
        self.on_shutdown(self._pool.shutdown, cancel_futures=True)  # runs even if start fails later

    def run(self, batches):  # pull lazily, a bounded number in flight, yield results as they finish
        send = lambda batch: self._pool.submit(run_pickled_batch, pickle_batch(batch))  # noqa: E731
        return in_flight(Futures(send, self.name), batches, self.options.in_flight or 2 * self.workers)
