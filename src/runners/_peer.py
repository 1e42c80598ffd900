"""What answers at an address, for back-ends that join a cluster: one line for an error message.

A cluster library told to join an address where some other service listens (a web server, a
dashboard port) often waits for a handshake that never comes, for minutes. A back-end checks the
peer with its own protocol, bounded in time; when that fails, `what_answers` says what is there
instead, so the error can name the address, what answered and what was expected.
"""

from __future__ import annotations

import ipaddress
import socket
import time

from ._errors import short_repr

# Greetings sent, in turn, only to a service that stays silent: an HTTP/1 server answers the first
# with a status line; an HTTP/2-only (gRPC) server drops it, and answers the second with a frame.
HTTP1_REQUEST = b"HEAD / HTTP/1.0\r\n\r\n"
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
HTTP2_FRAME_TYPES = range(10)  # DATA .. CONTINUATION: the 4th byte of a frame header


def check_listen_address(value: str, key: str) -> None:
    """Raise a ConfigError naming `key` unless `value` is an IP address of this machine or a wildcard:
    for a back-end option that moves what runners starts off loopback (the user names the address)."""
    import psutil

    from ._errors import ConfigError

    # link-local IPv6 addresses need a %interface scope that a listen address cannot carry: left out
    mine = {ipaddress.ip_address(a.address) for nic in psutil.net_if_addrs().values() for a in nic
            if a.family in (socket.AF_INET, socket.AF_INET6) and "%" not in a.address}
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        ip = None
    if ip is None or not (ip in mine or ip.is_unspecified):
        valid = ", ".join(sorted(map(str, mine), key=lambda a: (":" in a, a)))
        raise ConfigError(f"{key}: {value!r} is not an IP address of this machine; expected one "
                          f"of {valid}, or 0.0.0.0 (every interface)")


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of `host:port`, `[v6]:port` or `scheme://host:port`; ValueError otherwise."""
    target = address.split("://", 1)[-1].rstrip("/")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    return host.strip("[]"), int(port)


def what_answers(host: str, port: int, timeout: float = 2.0) -> str:
    """A short description of what listens at (host, port), found within about `timeout` seconds:
    'nothing (Connection refused)', 'an HTTP server (HTTP/1.0 404 File not found)', 'an HTTP/2
    (gRPC) server', 'a service that sent ...', 'a service that accepted the connection and said
    nothing'."""
    deadline = time.monotonic() + timeout
    said = b""
    for greeting in (None, HTTP1_REQUEST, HTTP2_PREFACE):  # None: listen first (SSH, dask speak first)
        try:
            conn = socket.create_connection((host, port), timeout=max(0.1, deadline - time.monotonic()))
        except OSError as exc:
            return f"nothing ({exc.strerror or exc})" if greeting is None else _described(said)
        with conn:
            if greeting is not None:
                try:
                    conn.sendall(greeting)
                except OSError:
                    continue
            said = _receive(conn, max(0.1, min(deadline - time.monotonic(), timeout / 3)))
        if said:
            break
    return _described(said)


def _described(said: bytes) -> str:
    if said.startswith(b"HTTP/"):
        status = said.split(b"\r\n", 1)[0].decode("latin-1")
        return f"an HTTP server ({status})"
    if said.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return "an HTTP server (it sent a web page)"
    if len(said) >= 9 and said[3] in HTTP2_FRAME_TYPES and said[:3] < b"\x00\x40\x00":
        return "an HTTP/2 (gRPC) server"
    if not said:
        return "a service that accepted the connection and said nothing"
    return f"a service that sent {short_repr(said, 50)}"


def _receive(conn: socket.socket, seconds: float) -> bytes:
    conn.settimeout(seconds)
    try:
        return conn.recv(512)
    except OSError:  # timed out, or reset
        return b""
