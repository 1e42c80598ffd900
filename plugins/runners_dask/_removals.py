"""Workers that left a joined cluster unexpectedly, and the batches they were running.

A `dask scheduler` that runners joins reruns a dead worker's tasks by itself, up to its own
`allowed-failures` (3 by default), which runners cannot set from a client: `--retries 0` would not be
honoured and the rerun would not be counted. The scheduler publishes each removal on its "all" topic with
the keys the worker was processing; the back-end takes those batches back from dask (cancels them) and
reports them lost, so runners' retries policy decides, as on the LocalCluster it starts (allowed-failures 0).
"""

from __future__ import annotations

import queue
from typing import Any

TOPIC = "all"  # where dask's scheduler logs "remove-worker" (distributed.Scheduler.remove_worker)


class WorkerRemovals:
    """Listens, for the life of the client, to the scheduler's unexpected worker removals."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._events: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        client.subscribe_topic(TOPIC, self._heard)

    def _heard(self, event: tuple[float, Any]) -> None:
        message = event[1]
        # A worker retired on purpose (expected) hands its work over: nothing of it is lost.
        if isinstance(message, dict) and message.get("action") == "remove-worker" and \
                not message.get("expected"):
            self._events.put(message)

    def take_back(self, futures: list[Any], lost: dict[Any, str]) -> list[Any]:
        """Those of `futures` that a worker was running when it left (since the last call), cancelled
        so that the scheduler does not rerun them; each is noted in `lost` with that worker."""
        by_key = {future.key: future for future in futures}
        taken = []
        while not self._events.empty():
            message = self._events.get()
            for key in set(message.get("processing-tasks") or ()) & set(by_key):
                future = by_key[key]
                if future.status != "finished" and future not in lost:  # a finished rerun stands
                    lost[future] = message.get("worker", "?")
                    taken.append(future)
        if taken:
            self.client.cancel(taken, force=True)
        return taken

    def close(self) -> None:
        if self.client.status == "running":  # a client that lost its scheduler holds no subscription
            self.client.unsubscribe_topic(TOPIC)
