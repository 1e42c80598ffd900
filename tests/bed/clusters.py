"""Ray and Dask clusters on the test bed, started as a user would on real machines: `ray start` with
token authentication and `dask scheduler` / `dask worker`, each bound to its host's bed address.

Their processes belong to the hosts (reparented to each host's process 1), not to the test. A test that
strikes a host marks it hurt; a later test that needs that host heals it first: what is left on the host
is ended by PID, its cable is mended, and its node or worker is started again.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

from tests.bed.hosts import Bed
from tests.bed.runs import Finished, HostRun, make_beat, runners_command, strike

BIN = Path(sys.executable).parent
START_SECONDS = 60  # one node or worker joining, on a loaded two-core machine
RECOVER_SECONDS = 60  # issue 15: a struck run ends with the right answer within 60 s of the fault
RAY_PORT = 6379
DASK_PORT = 8786


class ClusterFailed(AssertionError):
    """The cluster did not come up (or back) in time."""


class Cluster:
    """What Ray's and Dask's clusters share: a head on the first host, members on `members`."""

    backend = ""  # the runners back-end that joins it
    address = ""
    client_env: dict[str, str] = {}  # what a driver needs in its environment to join

    def __init__(self, bed: Bed, members: list[str], extra_env: dict[str, str]) -> None:
        self.bed = bed
        self.head = next(iter(bed.hosts))
        self.members = members
        self.hurt: set[str] = set()
        # each machine its own temp folder; the test's variables stay with the test
        self.env = {**os.environ, **extra_env, "TMPDIR": str(bed.private)}
        for name in ("RAY_ADDRESS", "RUNNERS_TEST_TAG"):
            self.env.pop(name, None)

    def _start(self, name: str) -> None:
        raise NotImplementedError

    def count(self) -> int:
        """Members the head sees alive."""
        raise NotImplementedError

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + START_SECONDS
        while (alive := self.count()) != count:
            if time.monotonic() > deadline:
                raise ClusterFailed(f"{type(self).__name__}: {alive} members alive, not {count}, "
                                    f"after {START_SECONDS} s")
            time.sleep(0.5)

    def ready(self, *names: str) -> None:
        """Heal those of `names` that a test struck: once the head has given up on them (else a node
        that is still listed, though dead, could be counted in place of the new one)."""
        healing = sorted(self.hurt & set(names))
        if not healing:
            return
        self.wait_for(len(self.members) - len(self.hurt))
        for name in healing:
            self.bed.mend(name)
            self.bed.stop(name, grace=1)
            self._start(name)
            self.hurt.discard(name)
        self.wait_for(len(self.members) - len(self.hurt))

    def command(self, *args: str) -> list[str]:
        """`runners exec ARGS --json` on this cluster."""
        return runners_command("exec", *args, "--backend", self.backend, "--set",
                               f"backend.address={self.address}", "--json")

    def struck_run(self, host: str, fault: str, items: int, *args: str) -> Finished:
        """A run from h1 of `items` beat items of 0.5 s (ARGS added), struck on `host` by `fault`
        ("kill" or "cut") once an item runs there; it may take RECOVER_SECONDS from the fault."""
        self.ready(*self.bed.hosts)
        beat = make_beat(self.bed, "h1", seconds=0.5)
        command = self.command(beat.task, "--set", f"n={items}", "--chunksize", "1", *args)
        run = HostRun(self.bed, "h1", command, env=self.client_env)
        moment = strike(self.bed, beat, host, fault)
        self.hurt.add(host)
        return run.finish(timeout=RECOVER_SECONDS, since=moment)

    def close(self) -> None:
        for name in self.bed.hosts:
            self.bed.mend(name)
            self.bed.stop(name, grace=2)


class RayCluster(Cluster):
    """A Ray head on the first host and a node on each other one, one CPU each, token auth on."""

    backend = "ray"

    def __init__(self, bed: Bed) -> None:
        # What a driver needs to join: the token the nodes were started with. And, on the nodes and the
        # driver alike, the README's 5 s gRPC keepalive: a node whose link is cut is noticed in seconds,
        # not ~7 minutes (set on the driver alone, it gets quiet batches cut by the nodes' GOAWAYs).
        self.client_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                           "RAY_USAGE_STATS_ENABLED": "0", "RAY_grpc_client_keepalive_time_ms": "5000",
                           "RAY_grpc_client_keepalive_timeout_ms": "5000"}
        super().__init__(bed, list(bed.hosts), self.client_env)
        self.address = f"{bed.hosts[self.head].ip}:{RAY_PORT}"
        self.cpus = len(self.members)
        self._start(self.head)
        self._start(*[name for name in self.members if name != self.head])  # the nodes side by side
        self.wait_for(len(self.members))

    def _start(self, *names: str) -> None:
        starts = {}
        for name in names:
            role = (["--head", f"--port={RAY_PORT}", "--include-dashboard=false"] if name == self.head
                    else [f"--address={self.address}"])
            command = [str(BIN / "ray"), "start", *role, f"--node-ip-address={self.bed.hosts[name].ip}",
                       "--num-cpus=1", "--num-gpus=0", "--disable-usage-stats",
                       "--object-store-memory=80000000", f"--temp-dir={self.bed.private}/ray"]
            starts[name] = subprocess.Popen([*self.bed.on(name), *command], env=self.env, text=True,
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for name, start in starts.items():
            try:
                output = start.communicate(timeout=START_SECONDS)[0]
            except subprocess.TimeoutExpired:
                start.kill()
                output = start.communicate()[0] + f"\n(killed after {START_SECONDS} s)"
            if start.returncode != 0:
                raise ClusterFailed(f"`ray start` on {name} failed: {output[-3000:]}")

    def count(self) -> int:
        status = [str(BIN / "ray"), "status", f"--address={self.address}"]
        done = subprocess.run([*self.bed.on(self.head), *status], env=self.env, capture_output=True,
                              text=True, timeout=START_SECONDS)
        active = done.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
        return sum(1 for line in active.splitlines() if "node_" in line)


class DaskCluster(Cluster):
    """A `dask scheduler` on the first host and a single-thread `dask worker` on each other one."""

    backend = "dask"

    def __init__(self, bed: Bed) -> None:
        super().__init__(bed, list(bed.hosts)[1:], {})
        self.address = f"tcp://{bed.hosts[self.head].ip}:{DASK_PORT}"
        bed.start(self.head, [str(BIN / "dask"), "scheduler", "--host", bed.hosts[self.head].ip,
                              "--port", str(DASK_PORT), "--no-dashboard"], self.env, "dask-scheduler.log")
        for name in self.members:
            self._start(name)
        self.wait_for(len(self.members))

    def _start(self, name: str) -> None:
        command = [str(BIN / "dask"), "worker", self.address, "--host", self.bed.hosts[name].ip,
                   "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
                   "--local-directory", f"{self.bed.private}/dask"]
        self.bed.start(name, command, self.env, "dask-worker.log")

    def count(self) -> int:
        script = ("from distributed import Client\n"
                  f"with Client({self.address!r}, timeout=20, set_as_default=False) as c:\n"
                  "    print(len(c.nthreads()))")
        done = subprocess.run([*self.bed.on(self.head), sys.executable, "-c", script], env=self.env,
                              capture_output=True, text=True, timeout=START_SECONDS)
        return int(done.stdout.strip() or -1)
