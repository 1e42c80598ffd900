"""The asyncio back-end on the cases that apply to it: async tasks only."""

from __future__ import annotations

import asyncio
import time

import pytest

import runners
from runners import testing


async def async_echo_after(item):
    value, delay = item
    await asyncio.sleep(delay)
    return value


async def async_raise_on_seven(item):
    if item == 7:
        raise ValueError(f"item {item} is unlucky")
    return item * 2


def test_iowait_equals_serial_and_overlaps_waits():
    began = time.perf_counter()
    record = runners.run("iowait", backend="asyncio", workers=50, params={"n": 50, "seconds": 0.2})
    assert record.result == runners.run("iowait", params={"n": 5, "seconds": 0}).result + sum(range(5, 50))
    assert record.check.ok
    assert time.perf_counter() - began < 50 * 0.2 / 2  # serial would need 10 s


def test_results_come_back_in_item_order():
    task = runners.Task("aecho", testing.EchoParams, testing._split, testing.echo, testing._collect,
                        run_async=async_echo_after)
    items = [[i, 0.02 * ((7 * i) % 5)] for i in range(20)]
    assert runners.run(task, backend="asyncio", workers=3, chunksize=1,
                       params={"items": items}).result == list(range(20))


@pytest.mark.parametrize("n", [0, 1, 3])
def test_edge_sizes_and_explicit_chunksize(n):
    record = runners.run("iowait", backend="asyncio", workers=5, chunksize=2, params={"n": n, "seconds": 0})
    assert record.result == n * (n - 1) // 2 and record.items == n and record.batches == (n + 1) // 2


def test_item_exception_keeps_type_message_and_item():
    task = runners.Task("araise", testing.EchoParams, testing._split, testing.echo, testing._collect,
                        run_async=async_raise_on_seven)
    with pytest.raises(runners.TaskError) as caught:
        runners.run(task, backend="asyncio", chunksize=3, params={"items": list(range(20))})
    assert isinstance(caught.value.exception, ValueError) and caught.value.index == 7
    assert "async_raise_on_seven" in caught.value.remote_traceback


def test_tasks_without_an_async_function_are_refused():
    with pytest.raises(runners.ConfigError, match="run_async"):
        runners.run("tiny", backend="asyncio")
