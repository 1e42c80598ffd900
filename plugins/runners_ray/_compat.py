"""Ray's private APIs this back-end uses, in one place: each says the Ray versions it was checked
against (CHECKED), tests/test_compat.py fails loudly when a new Ray changes one, and pyproject.toml
bounds ray below the next minor release. None has a public replacement in Ray 2.60."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHECKED = ("2.52", "2.60")  # the Ray releases these were read against
# What a raylet publishes when a worker dies mid-task: runners reports that itself (WorkerLost, or
# "1 worker lost, its batch retried" after a retry), in one line instead of Ray's ten.
WORKER_DIED = "A worker died or was killed while executing a task"


def raylet_messages_to_stderr() -> None:
    """Ray prints the errors its raylets publish ("a worker died...") on the driver's stdout, whatever
    log_to_driver says, which corrupts `runners exec --json`; they are diagnostics, so send them to
    stderr, less the worker deaths that runners reports itself. `ray._private.worker.print_to_stdstream
    (data, ignore_prefix)`, 2.52-2.60."""
    from ray._private import worker

    original = worker.print_to_stdstream
    if getattr(original, "runners_stderr", False):
        return

    def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> None:
        lines = [line for line in data.get("lines", []) if WORKER_DIED not in line]
        if lines or not data.get("lines"):
            original({**data, "lines": lines, "is_err": True}, ignore_prefix)

    to_stderr.runners_stderr = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_stderr


@contextmanager
def loopback_only() -> Iterator[None]:
    """Ray on loopback: Ray swaps 127.0.0.1 for the machine's LAN address (to dial, and to listen on
    every interface) unless it believes multi-node clusters are off; for the block, they are.
    `ray._private.ray_constants.ENABLE_RAY_CLUSTER`, 2.52-2.60."""
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def private_instance(node_ip: str, temp_dir: str, inline_bytes: int) -> dict[str, Any]:
    """The keywords of `ray.init` that start a private instance on `node_ip`, with its session in
    `temp_dir`, returning results of up to `inline_bytes` inline: `_node_ip_address`, `_temp_dir` and
    `_system_config` (max_direct_call_object_size) are private keywords, 2.52-2.60."""
    return {"_node_ip_address": node_ip, "_temp_dir": temp_dir,
            "_system_config": {"max_direct_call_object_size": inline_bytes}}


# A method every Ray GCS answers (or refuses for want of the cluster's token), for probing an address.
GCS_METHOD = "/ray.rpc.NodeInfoGcsService/GetClusterId"  # Ray's gRPC protocol, 2.52-2.60
