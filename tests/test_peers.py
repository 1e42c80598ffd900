"""An address that answers but is not the peer: ray and dask told to join a port where another service
listens (a web server, a silent one, the other library's scheduler) exit 1 within `connect_timeout` plus
start-up, with one line naming the address, what answered and what was expected; Ray dials only the
address it was given."""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator

import psutil
import pytest

import runners
from tests.conftest import run_cli

CONNECT_TIMEOUT = 3.0
# The interpreter, runners and the library imported (Ray ~3 s) on a loaded 2-core machine, the
# description of what answered (2 s at most), and margin.
STARTUP = 15.0
PREFIX = {"ray": "", "dask": "tcp://"}
EXPECTED = {"ray": "not a Ray cluster", "dask": "not a dask scheduler"}
BACKENDS = [b for b in ("ray", "dask") if runners.backend_status(b)[0]]


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class Silent:
    """Listens on `hosts` at one port, accepts every connection, says nothing; records the local
    address each connection was made to (the address the client dialled)."""

    def __init__(self, hosts: list[str]) -> None:
        first = socket.create_server((hosts[0], 0))
        self.port = first.getsockname()[1]
        self.servers = [first] + [socket.create_server((h, self.port)) for h in hosts[1:]]
        self.dialled: list[str] = []
        self.held: list[socket.socket] = []
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._accept, args=(s,), daemon=True) for s in self.servers]
        for thread in self.threads:
            thread.start()

    def _accept(self, server: socket.socket) -> None:
        server.settimeout(0.1)
        while not self.stopping.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            self.dialled.append(conn.getsockname()[0])
            self.held.append(conn)

    def close(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join()
        for sock in self.servers + self.held:
            sock.close()


def lan_ipv4() -> str | None:
    for nic in psutil.net_if_addrs().values():
        for addr in nic:
            if addr.family == socket.AF_INET and not ipaddress.ip_address(addr.address).is_loopback:
                return addr.address
    return None


@pytest.fixture
def silent_server() -> Iterator[Silent]:
    # Also on this machine's LAN address, at the same port: a client that swaps 127.0.0.1 for it
    # (as Ray does by default) is seen dialling there.
    lan = lan_ipv4()
    server = Silent(["127.0.0.1", lan] if lan else ["127.0.0.1"])
    try:
        yield server
    finally:
        server.close()


def join(backend: str, port: int) -> tuple[str, object, float]:
    address = f"{PREFIX[backend]}127.0.0.1:{port}"
    began = time.monotonic()
    done = run_cli("exec", "tiny", "--backend", backend, "--set", f"backend.address={address}",
                   "--set", f"backend.connect_timeout={CONNECT_TIMEOUT}", timeout=120,
                   env={"RAY_USAGE_STATS_ENABLED": "0"})
    return address, done, time.monotonic() - began


def assert_one_line_naming(done, address: str, answered: str, expected: str) -> None:
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert not done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert repr(address) in lines[0] and answered in lines[0] and expected in lines[0], lines[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_web_server_at_the_address_is_named_and_refused_within_the_connect_timeout(backend, web_server):
    address, done, seconds = join(backend, web_server)
    assert_one_line_naming(done, address, "an HTTP server (HTTP/1.0 200 OK)", EXPECTED[backend])
    assert seconds < CONNECT_TIMEOUT + STARTUP, seconds


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_silent_service_at_the_address_is_named_and_refused_and_only_that_address_is_dialled(
        backend, silent_server):
    address, done, seconds = join(backend, silent_server.port)
    assert_one_line_naming(done, address, "accepted the connection and said nothing", EXPECTED[backend])
    assert seconds < CONNECT_TIMEOUT + STARTUP, seconds
    assert silent_server.dialled and set(silent_server.dialled) == {"127.0.0.1"}, silent_server.dialled


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs both ray and dask")
def test_a_dask_scheduler_is_not_taken_for_a_ray_cluster(tmp_path):
    import dask
    from distributed import LocalCluster

    scheduler = {"n_workers": 0, "processes": False, "protocol": "tcp", "host": "127.0.0.1",
                 "scheduler_kwargs": {"dashboard": False, "dashboard_address": "127.0.0.1:0"}}
    with dask.config.set({"temporary-directory": str(tmp_path)}), LocalCluster(**scheduler) as cluster:
        port = int(cluster.scheduler_address.rsplit(":", 1)[1])
        address, done, seconds = join("ray", port)
    assert_one_line_naming(done, address, "a service that sent b'", EXPECTED["ray"])
    assert seconds < CONNECT_TIMEOUT + STARTUP, seconds


def test_what_answers_tells_nothing_from_a_web_server_from_a_silent_service(web_server, silent_server):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed = unused.getsockname()[1]
    assert runners.backend.what_answers("127.0.0.1", closed).startswith("nothing (")
    assert runners.backend.what_answers("127.0.0.1", web_server) == "an HTTP server (HTTP/1.0 200 OK)"
    assert runners.backend.what_answers("127.0.0.1", silent_server.port, timeout=1.0) == (
        "a service that accepted the connection and said nothing")
