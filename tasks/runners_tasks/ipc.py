"""The cost of each inter-process channel the document teaches, measured the same way for all.

One item is one measurement: a sender process pushes `messages` payloads of `payload` bytes through one
channel to this process, which checks every message (sequence number, length, last byte). The clock
runs from the go signal to the last message received, so process start-up is not counted.
Run it on the serial back-end: each item starts its own sender process, and measurements must not overlap.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any, Literal

from runners import Task, Verdict, param

Channel = Literal["queue", "pipe", "value_array", "shared_memory", "manager"]
CHANNELS = ["queue", "pipe", "value_array", "shared_memory", "manager"]
TIMEOUT = 60.0  # seconds without a message before the sender is declared dead


@dataclass(frozen=True)
class IpcParams:
    channels: list[Channel] = param(CHANNELS, help="channels to measure")
    payloads: list[int] = param([64, 1_048_576], help="message sizes in bytes (at least 16)")
    messages: int = param(5_000, min=1, max=10**8, help="messages per measurement (small payloads)")
    volume_mb: int = param(128, min=1, max=10**5, help="MB per measurement, caps messages for big payloads")


def split(params: IpcParams, seed: int) -> list[tuple[str, int, int]]:
    items = []
    for payload in params.payloads:
        if payload < 16:
            raise ValueError(f"payloads: {payload} bytes is too small; at least 16 hold the check fields")
        count = max(4, min(params.messages, params.volume_mb * 2**20 // payload))
        items += [(channel, payload, count) for channel in params.channels]
    return items


def _message(buffer: bytearray, i: int) -> bytes:
    buffer[:8] = i.to_bytes(8, "little")
    buffer[-1] = i % 251
    return bytes(buffer)


def _intact(data: bytes, i: int, payload: int) -> bool:
    return len(data) == payload and int.from_bytes(data[:8], "little") == i and data[-1] == i % 251


def _sender(channel: str, payload: int, count: int, ends: tuple, ready: Any, go: Any) -> None:
    """Runs in the child process: wait for the go signal, then send `count` messages."""
    buffer = bytearray(payload)
    if channel == "shared_memory":
        block = shared_memory.SharedMemory(ends[0])
    ready.set()
    go.wait()
    if channel in ("queue", "manager"):
        for i in range(count):
            ends[0].put(_message(buffer, i))
    elif channel == "pipe":
        for i in range(count):
            ends[0].send_bytes(_message(buffer, i))
    elif channel == "value_array":
        array, empty, full = ends
        for i in range(count):
            message = _message(buffer, i)
            empty.acquire()
            with array.get_lock():
                ctypes.memmove(array.get_obj(), message, payload)
            full.release()
    else:
        _, empty, full = ends
        for i in range(count):
            message = _message(buffer, i)
            empty.acquire()
            block.buf[:payload] = message
            full.release()
        block.close()


def measure(item: tuple[str, int, int]) -> dict[str, Any]:
    """Time `count` messages of `payload` bytes through `channel`; every one is checked on arrival."""
    channel, payload, count = item
    ctx = multiprocessing.get_context("spawn")  # no fork of a possibly threaded driver
    ready, go = ctx.Event(), ctx.Event()
    cleanup: list[Any] = []
    if channel == "queue":
        queue = ctx.Queue()
        ends, receive = (queue,), lambda: queue.get(timeout=TIMEOUT)
    elif channel == "manager":
        manager = ctx.Manager()
        cleanup.append(manager.shutdown)
        queue = manager.Queue()
        ends, receive = (queue,), lambda: queue.get(timeout=TIMEOUT)
    elif channel == "pipe":
        reader, writer = ctx.Pipe(duplex=False)
        cleanup += [reader.close, writer.close]
        ends, receive = (writer,), lambda: reader.recv_bytes() if reader.poll(TIMEOUT) else _dead()
    else:
        empty, full = ctx.Semaphore(1), ctx.Semaphore(0)  # a one-slot hand-off, as a reader must wait
        if channel == "value_array":
            array = ctx.Array(ctypes.c_ubyte, payload, lock=True)

            def receive() -> bytes:
                _acquire(full)
                with array.get_lock():
                    data = ctypes.string_at(ctypes.addressof(array.get_obj()), payload)
                empty.release()
                return data
            ends = (array, empty, full)
        else:
            block = shared_memory.SharedMemory(create=True, size=payload)
            cleanup += [block.unlink, block.close]

            def receive() -> bytes:
                _acquire(full)
                data = bytes(block.buf[:payload])
                empty.release()
                return data
            ends = (block.name, empty, full)
    sender = ctx.Process(target=_sender, args=(channel, payload, count, ends, ready, go), daemon=True)
    try:
        sender.start()
        if not ready.wait(TIMEOUT):
            raise RuntimeError(f"{channel}: the sender process did not start")
        began = time.perf_counter()
        go.set()
        intact = all(_intact(receive(), i, payload) for i in range(count))
        seconds = time.perf_counter() - began
        sender.join(TIMEOUT)
    finally:
        if sender.is_alive():
            sender.kill()
            sender.join()
        for close in reversed(cleanup):
            close()
    return {"channel": channel, "payload": payload, "messages": count, "seconds": round(seconds, 5),
            "msgs_per_s": round(count / seconds, 1), "MB_per_s": round(count * payload / seconds / 1e6, 2),
            "intact": intact}


def _acquire(semaphore: Any) -> None:
    if not semaphore.acquire(timeout=TIMEOUT):
        _dead()


def _dead() -> bytes:
    raise RuntimeError(f"no message for {TIMEOUT:g} s: the sender process stopped")


def combine(rows: Iterator[dict[str, Any]], params: IpcParams) -> list[dict[str, Any]]:
    return list(rows)


def check(rows: list[dict[str, Any]], params: IpcParams) -> Verdict:
    """Every measurement must have delivered every message intact and in order."""
    expected = split(params, 0)
    got = [(r["channel"], r["payload"], r["messages"]) for r in rows]
    if got != [tuple(e) for e in expected]:
        return Verdict(False, f"measurements {got} do not match the plan {expected}")
    broken = [f"{r['channel']}/{r['payload']} B" for r in rows if not r["intact"]]
    if broken:
        return Verdict(False, "messages arrived damaged or out of order: " + ", ".join(broken))
    return Verdict(True, f"{len(rows)} measurements; every message arrived intact and in order")


TASK = Task("ipc", IpcParams, split, measure, combine, check,
            description="throughput of Queue, Pipe, Value/Array, shared_memory, Manager")
