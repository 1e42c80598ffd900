"""What the ray back-end does to the driver's process and environment around Ray itself: token auth,
the user's code for other machines, and probing an address before Ray retries it."""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import sys
from pathlib import Path

from runners.backend import RunnersError, installed_folders, split_address, what_answers

from ._compat import GCS_METHOD


def use_token_auth() -> None:
    """Make Ray's token authentication use a random token of this process, not one written to ~/.ray.

    Ray (2.52+) turns token authentication on for a cluster that ray.init starts, unless RAY_AUTH_MODE
    says otherwise; a token the user already has (environment or ~/.ray/auth_token) wins. The token
    stays in the environment for the life of the process because Ray caches it on first use.
    """
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return
    if {"RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"} & set(os.environ):
        return
    if not os.path.exists(os.path.expanduser("~/.ray/auth_token")):
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


def probe(address: str, timeout: float) -> None:
    """Fail within about `timeout` seconds, naming `address`, unless a Ray cluster's GCS answers there
    and lets this driver in.

    Ray itself retries an address that does not answer, answers as something else (a web server, a
    dashboard), or refuses the driver's token, for many seconds and then says only "Failed to connect";
    a TCP connect and one gRPC call to the GCS, with the token Ray would send, fail fast and say why.
    """
    target = address.split("://", 1)[-1]
    if target == "auto" or ":" not in target:
        return  # Ray finds the address itself and fails fast when there is none
    try:
        host, port = split_address(address)
        socket.create_connection((host, port), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        raise RunnersError(
            f"ray: no Ray cluster answers at {address!r} within {timeout:g} s ({exc}); start one with "
            "`ray start --head` there, or fix backend.address"
        ) from exc
    if address.startswith("ray://"):
        return  # a Ray Client server speaks another protocol: Ray checks it itself
    credentials = auth_metadata()
    answer = _ask_gcs(host, port, timeout, credentials)
    if answer == "refused" and credentials:
        raise RunnersError(
            f"ray: the Ray cluster at {address!r} refused this driver's token: it is not the cluster's; "
            "give the token its nodes were started with (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
            "~/.ray/auth_token)")
    if answer == "refused":
        raise RunnersError(
            f"ray: the Ray cluster at {address!r} refused this driver: the cluster requires a token "
            "(set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or "
            "~/.ray/auth_token)")
    if answer != "gcs":
        raise RunnersError(
            f"ray: backend.address {address!r} is answered by {what_answers(host, port, min(timeout, 2.0))}, "
            "not a Ray cluster; expected the GCS address of a Ray head node (`ray start --head` prints it; "
            "port 6379 by default)"
        )


def auth_metadata() -> tuple[tuple[str, str], ...]:
    """The gRPC metadata Ray's driver authenticates with: under RAY_AUTH_MODE=token, the token from
    RAY_AUTH_TOKEN, else the file RAY_AUTH_TOKEN_PATH names, else ~/.ray/auth_token (Ray's documented
    order), as a bearer token. (Not Ray's own loader: it caches the mode and the token for the life of
    the process on first use, before a private instance's token is set.)"""
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return ()
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if not token:
        path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
        try:
            with open(path) as file:
                token = file.read().strip()
        except OSError:
            token = ""  # ray.init says that no token was found, naming where it looked
    return (("authorization", f"Bearer {token}"),) if token else ()


def _ask_gcs(host: str, port: int, timeout: float, metadata: tuple[tuple[str, str], ...]) -> str:
    """One gRPC call to what answers at (host, port): "gcs" if a Ray GCS replies, "refused" if it turns
    the call down for want of the cluster's token, "other" if it is not a GCS (another gRPC server does
    not know the method; anything else fails the call)."""
    import grpc

    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(GCS_METHOD)  # bytes in, bytes out: an empty request message
        try:
            call(b"", timeout=timeout, metadata=metadata)
        except grpc.RpcError as exc:
            refused = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
            return "refused" if exc.code() in refused else "other"
    return "gcs"


def is_loopback(address: str) -> bool:
    try:
        host, _ = split_address(address)
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def user_paths() -> list[str]:
    """Folders on the driver's sys.path that a fresh interpreter of this environment lacks."""
    installed = installed_folders()
    found: list[str] = []
    for entry in sys.path:
        path = Path(entry or os.getcwd()).resolve()
        if path.is_dir() and not any(path.is_relative_to(f) for f in installed) and str(path) not in found:
            found.append(str(path))
    return found
