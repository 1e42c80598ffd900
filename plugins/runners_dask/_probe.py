"""Is it a dask scheduler that answers at an address? dask itself waits for the peer's handshake
without a time limit, so joining a port where another service listens hangs for minutes."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from runners.backend import RunnersError, split_address, what_answers


def check_scheduler(address: str, timeout: float) -> None:
    """Raise a RunnersError within about `timeout` seconds unless a dask scheduler answers at `address`.

    dask waits for the peer's handshake without a time limit: at a port where another service
    listens (a web server, the dashboard), joining it hangs for minutes with no word.
    """
    host, port = split_address(address)
    try:  # dask retries a refused connection until its timeout: a plain connect says so at once
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise RunnersError(f"the dask scheduler at {address!r} did not answer within {timeout:g} s "
                           f"({exc.strerror or exc}); start it with `dask scheduler` and workers with "
                           f"`dask worker {address}`, or fix the address") from None
    identity = _identity(address, timeout)
    if isinstance(identity, dict) and identity.get("type") == "Scheduler":
        return
    if isinstance(identity, dict):
        answered = f"a dask {identity.get('type', 'server')}"
    else:
        answered = what_answers(host, port, min(timeout, 2.0))
    raise RunnersError(f"dask: backend.address {address!r} is answered by {answered}, not a dask scheduler; "
                       "expected the address `dask scheduler` prints (tcp://HOST:8786 by default; "
                       "8787 is its dashboard)")


def _identity(address: str, timeout: float) -> Any:
    """What a dask server at `address` says it is (its `identity` reply), or the error that kept it
    from saying so within `timeout` seconds. Asked in a thread of its own: the caller may be inside
    an event loop."""
    import asyncio

    from distributed.comm import connect

    async def ask() -> Any:
        comm = await connect(address, timeout=timeout)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    def bounded() -> Any:
        try:
            return asyncio.run(asyncio.wait_for(ask(), timeout))
        except Exception as exc:  # noqa: BLE001 - refused, timed out, garbage: all mean "not a scheduler"
            return exc

    with ThreadPoolExecutor(1, thread_name_prefix="runners-dask-probe") as pool:
        return pool.submit(bounded).result()
