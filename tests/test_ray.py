"""The ray back-end beyond the conformance suite: a real two-node cluster started with `ray start`,
the private instance's safe defaults, and bad input (a dead address, an unknown option)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import psutil
import pytest

import runners
import runners.testing
from tests.conftest import run_cli

pytestmark = pytest.mark.skipif(not runners.backend_status("ray")[0], reason="ray is not installed")

RAY = str(Path(sys.executable).with_name("ray"))
CLUSTER_TAG = "RUNNERS_RAY_CLUSTER_TAG"  # every process of the test cluster inherits it
RAY_DAEMONS = ("raylet", "gcs_server")  # the daemons a private instance must not leave running


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_processes(tag: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(CLUSTER_TAG) == tag and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def cluster_tree(tag: str) -> list[psutil.Process]:
    """The tagged processes and all their descendants: Ray's agents rewrite their environment
    (setproctitle), so only their parentage shows they belong to the cluster."""
    found = {p.pid: p for p in cluster_processes(tag)}
    for proc in list(found.values()):
        try:
            found.update({c.pid: c for c in proc.children(recursive=True)})
        except psutil.NoSuchProcess:
            continue
    return list(found.values())


def stop_cluster(tag: str) -> list[str]:
    """Stop exactly this cluster's processes (`ray stop` would stop every Ray on the machine);
    return the command lines of any that survive."""
    seen: dict[int, psutil.Process] = {}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        procs = cluster_tree(tag)  # before signalling, while the parentage is intact
        seen.update({p.pid: p for p in procs})
        for proc in seen.values():
            try:
                proc.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(list(seen.values()), timeout=10)
        alive = [p for p in seen.values() if _running(p)]
        if not alive and not cluster_processes(tag):
            return []
    return [f"{p.pid} {p.name()}" for p in alive]


def _running(proc: psutil.Process) -> bool:
    try:  # a killed daemon whose parent was already gone may stay a zombie: it runs nothing
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def alive_nodes(address: str, env: dict[str, str]) -> int:
    done = subprocess.run([RAY, "status", f"--address={address}"], capture_output=True, text=True,
                          timeout=60, env=env)
    active = done.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
    return sum(1 for line in active.splitlines() if "node_" in line)


@pytest.fixture(scope="module")
def cluster():
    """A Ray head and a second node on this machine, one CPU each, with token authentication."""
    tag = uuid.uuid4().hex
    env = {**os.environ, CLUSTER_TAG: tag, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    # Short paths: Ray's Unix sockets live in the temp dir and must fit in 107 characters.
    folders = [tempfile.mkdtemp(prefix="rr-head-"), tempfile.mkdtemp(prefix="rr-node-")]
    address = f"127.0.0.1:{free_port()}"
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0", "--disable-usage-stats",
              "--object-store-memory=80000000"]
    try:
        head = ["--head", f"--port={address.rsplit(':')[1]}", "--include-dashboard=false",
                f"--ray-client-server-port={free_port()}"]
        for folder, role in zip(folders, (head, [f"--address={address}"]), strict=True):
            start = subprocess.run([RAY, "start", *role, *common, f"--temp-dir={folder}",
                                    f"--dashboard-agent-listen-port={free_port()}"],
                                   capture_output=True, text=True, timeout=180, env=env)
            assert start.returncode == 0, start.stdout + start.stderr
        deadline = time.monotonic() + 60
        while alive_nodes(address, env) < 2:
            assert time.monotonic() < deadline, "the second Ray node never joined"
            time.sleep(1)
        yield address, {k: env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_USAGE_STATS_ENABLED")}
    finally:
        left = stop_cluster(tag) + [p.cmdline() for p in cluster_tree(tag)]
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
        assert not left, f"the test cluster left processes: {left}"


def test_a_job_spreads_over_both_nodes_of_a_real_cluster_and_matches_serial(cluster, tmp_path):
    address, env = cluster
    # The task, and the package beside it that it imports, live in a folder no Ray worker has on its
    # path: the back-end must ship them.
    (tmp_path / "napping").mkdir()
    (tmp_path / "napping" / "__init__.py").write_text("SECONDS = 0.05\n")
    (tmp_path / "slowsquare.py").write_text(textwrap.dedent("""
        import time

        import napping

        def slow_square(x):
            time.sleep(napping.SECONDS)
            return x * x
    """))
    done = run_cli("exec", f"{tmp_path / 'slowsquare.py'}:slow_square", "--backend", "ray", "--workers", "2",
                   "--chunksize", "1", "--set", "n=40", "--set", f"backend.address={address}", "--json",
                   env=env, timeout=240)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["result"] == [x * x for x in range(40)]
    assert len(record["nodes"]) == 2, record["nodes"]
    assert all(count > 0 for count in record["nodes"].values()), record["nodes"]
    assert sum(record["nodes"].values()) == 40


def test_pi_on_the_cluster_equals_serial_pi(cluster):
    address, env = cluster
    params = {"samples": 400_000, "item_samples": 50_000}
    serial = runners.run("pi", backend="serial", params=params).result
    done = run_cli("exec", "pi", "--backend", "ray", "--set", "samples=400000", "--set", "item_samples=50000",
                   "--set", f"backend.address={address}", "--json", env=env, timeout=240)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == serial


@pytest.mark.parametrize(("token", "said"), [
    ({"RAY_AUTH_TOKEN": "not-the-token"}, "refused this driver's token"),
    ({"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": ""}, "the cluster requires a token"),
], ids=["wrong-token", "no-token"])
def test_joining_without_the_cluster_token_is_refused_saying_so_within_seconds(cluster, token, said):
    address, env = cluster
    began = time.monotonic()
    done = run_cli("exec", "tiny", "--backend", "ray", "--set", f"backend.address={address}",
                   env={**env, **token}, timeout=120)
    # Ray's own retries took ~21 s and said only "Failed to connect"; the probe answers at once (the
    # margin is the interpreter's and Ray's import on a loaded machine).
    assert time.monotonic() - began < 15, done.stderr
    assert done.returncode == 1, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert address in last and said in last and "RAY_AUTH_TOKEN" in last, done.stderr
    assert "Traceback" not in done.stderr


def test_an_address_that_does_not_answer_fails_fast_naming_it():
    dead = f"127.0.0.1:{free_port()}"
    began = time.monotonic()
    done = run_cli("exec", "tiny", "--backend", "ray", "--set", f"backend.address={dead}", timeout=60)
    assert time.monotonic() - began < 15 + 10  # 15 s limit plus the interpreter's and Ray's import
    assert done.returncode == 1, done.stderr
    assert dead in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_option_lists_the_allowed_ones():
    done = run_cli("exec", "tiny", "--backend", "ray", "--set", "backend.adress=auto")
    assert done.returncode == 2, done.stderr
    assert "'adress'" in done.stderr and "address" in done.stderr and "in_flight" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_private_instance_listens_only_on_loopback_and_stops_with_the_run():
    # In-process, so this test can look at the sockets while Ray runs.
    backend = runners.load_backend("ray")(workers=1)
    with backend:
        ray_procs = [p for p in psutil.Process().children(recursive=True)]
        listening = {c.laddr.ip for p in ray_procs for c in _listening(p)}
        daemons = {p.pid for p in ray_procs if any(d in p.name() for d in RAY_DAEMONS)}
    assert daemons, "no raylet or gcs_server was started"
    assert listening and listening <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening
    psutil.wait_procs([psutil.Process(pid) for pid in daemons if psutil.pid_exists(pid)], timeout=15)
    assert not [pid for pid in daemons if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]


# A private instance whose node never comes up (Ray gives a raylet 30 s to register; a loaded machine
# has taken longer): the fault is injected by wrapping Ray's own start of the node's processes.
FAILED_START = textwrap.dedent("""
    import json, os, tempfile, psutil, runners
    import ray._private.node as node
    start = node.Node.start_ray_processes
    def started_then_timed_out(self, *args, **kwargs):
        start(self, *args, **kwargs)
        raise Exception("The current node timed out during startup (injected)")
    node.Node.start_ray_processes = started_then_timed_out
    try:
        runners.run("pi", backend="ray", workers=1, params={"samples": 1000, "item_samples": 500})
    except runners.RunnersError as exc:
        error = str(exc)
    left = [" ".join(p.cmdline())[:200] for p in psutil.Process().children(recursive=True)]
    folders = [n for n in os.listdir(tempfile.gettempdir()) if n.startswith("runners-ray-")]
    print(json.dumps({"error": error, "left": left, "folders": folders}))
""")


def test_a_private_instance_that_fails_to_start_leaves_no_process_or_folder():
    # ray.shutdown() cannot stop an instance whose start failed: runners ends its processes itself,
    # before the run's error reaches the user (their interpreter may run for hours more).
    done = subprocess.run([sys.executable, "-c", FAILED_START], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["error"].startswith("ray: could not start a local Ray instance: The current node timed out")
    assert seen["left"] == [] and seen["folders"] == [], seen


def _listening(proc: psutil.Process) -> list:
    try:
        return [c for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


@pytest.mark.parametrize(("settings", "needles"), [
    (["backend.bind=0.0.0.0"], ["backend.bind", "127.0.0.1 only", "'0.0.0.0'", "every interface",
                                "ray start --head --node-ip-address", "backend.address"]),
    (["backend.bind=nonsense"], ["backend.bind", "127.0.0.1 only", "'nonsense'"]),
    (["backend.bind=10.1.2.3", "backend.address=auto"],
     ["backend.bind='10.1.2.3' contradicts backend.address='auto'"]),
])
def test_a_private_instance_refuses_any_bind_but_loopback_before_starting_ray(settings, needles):
    # Ray 2.60 given any node address but 127.0.0.1 listens on every interface (::), not on that one.
    began = time.monotonic()
    done = run_cli("exec", "tiny", "--backend", "ray", *[x for s in settings for x in ("--set", s)])
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr
    assert time.monotonic() - began < 30  # refused while parsing options: no Ray was started


def test_bind_to_loopback_is_the_default_and_may_be_said_explicitly():
    assert runners.load_backend("ray").Options().bind == "127.0.0.1"
    done = run_cli("exec", "tiny", "--backend", "ray", "--workers", "1", "--set", "backend.bind=127.0.0.1",
                   "--json", timeout=180)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == runners.run("tiny").result


def test_a_private_instance_returns_a_whole_batch_of_values_inline_not_through_the_object_store():
    # Its batches may hold max_batch_bytes of values (an estimate): results up to twice that must come
    # back in the task's reply, since those that go through the object store stay mapped in the driver.
    from ray._private.internal_api import memory_summary

    backend = runners.load_backend("ray")(workers=1)
    with backend:
        import ray

        assert backend.max_batch_bytes > runners.load_backend("ray").max_batch_bytes  # a joined Ray's
        echo = ray.remote(runners.testing.echo)
        size = int(1.9 * backend.max_batch_bytes)
        refs = [echo.remote(b"x" * size) for _ in range(3)]
        ready, _ = ray.wait(refs, num_returns=3, timeout=60)
        assert len(ready) == 3
        stats = memory_summary(ray.get_runtime_context().gcs_address, stats_only=True)
        assert "0 objects" in stats, stats
        assert all(len(value) == size for value in ray.get(refs))
