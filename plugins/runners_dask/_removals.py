"""Workers that left the cluster unexpectedly, and the batches they took with them.

The scheduler publishes each removal on its "all" topic with the keys the worker was processing and the
keys whose only copy of a result it held. Two uses:

- A `dask scheduler` that runners joins reruns a dead worker's tasks by itself, up to its own
  `allowed-failures` (3 by default), which runners cannot set from a client: `--retries 0` would not be
  honoured and the rerun would not be counted. The back-end takes those batches back from dask (cancels
  them) and reports them lost, so runners' retries policy decides, as on the LocalCluster it starts
  (allowed-failures 0).
- Every batch one death took must name the same worker, or the run counts that death more than once. A
  batch can go in three ways (taken back here, KilledWorker, or its finished result lost before the
  driver fetched it), and only the first two carry the worker; `worker_of` names it for the third.

The scheduler logs the event before it reports the tasks' new states, on the same stream to this client,
so the event has been heard by the time a batch is seen to be lost.
"""

from __future__ import annotations

import queue
from typing import Any

TOPIC = "all"  # where dask's scheduler logs "remove-worker" (distributed.Scheduler.remove_worker)


class WorkerRemovals:
    """Listens, for the life of the client, to the scheduler's unexpected worker removals of the tasks
    whose keys start with `prefix`."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client, self.prefix = client, prefix
        self._events: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._running: dict[str, str] = {}  # key -> the worker that left while running it
        self._holding: dict[str, str] = {}  # key -> the worker that left with its only result
        client.subscribe_topic(TOPIC, self._heard)

    def _heard(self, event: tuple[float, Any]) -> None:
        message = event[1]
        # A worker retired on purpose (expected) hands its work over: nothing of it is lost.
        if isinstance(message, dict) and message.get("action") == "remove-worker" and \
                not message.get("expected"):
            self._events.put(message)

    def _drain(self) -> None:
        while not self._events.empty():
            message = self._events.get()
            worker = message.get("worker", "?")
            for keys, left in ((message.get("processing-tasks"), self._running),
                               (message.get("lost-computed-tasks"), self._holding)):
                left.update((key, worker) for key in keys or () if str(key).startswith(self.prefix))

    def take_back(self, futures: list[Any], lost: dict[Any, str]) -> list[Any]:
        """Those of `futures` that a worker was running when it left (since the last call), cancelled
        so that the scheduler does not rerun them; each is noted in `lost` with that worker."""
        self._drain()
        taken = []
        for future in futures:
            worker = self._running.pop(future.key, None)
            if worker is not None and future.status != "finished" and future not in lost:
                lost[future] = worker  # (a finished rerun stands)
                taken.append(future)
        if taken:
            self.client.cancel(taken, force=True)
        return taken

    def worker_of(self, key: str) -> str | None:
        """The worker whose departure took task `key` (running it, or holding its result), if one did."""
        self._drain()
        return self._running.pop(key, None) or self._holding.pop(key, None)

    def close(self) -> None:
        if self.client.status == "running":  # a client that lost its scheduler holds no subscription
            self.client.unsubscribe_topic(TOPIC)
