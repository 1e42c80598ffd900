"""The joblib back-end's own features: its inner back-ends, memmapping, options and clean shut-down."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pytest

import runners
from runners import testing
from tests.conftest import run_cli

pytest.importorskip("joblib")
TINY = {"n": 300}
INNERS = ["loky", "threading", "multiprocessing"]
try:
    import distributed  # noqa: F401

    INNERS.append("dask")
except ImportError:
    pass


@pytest.mark.parametrize("inner", INNERS)
def test_each_inner_backend_agrees_with_serial(inner):
    serial = runners.run("pi", params={"samples": 100_000, "item_samples": 10_000}).result
    record = runners.run("pi", backend="joblib", workers=2, options={"inner": inner},
                         params={"samples": 100_000, "item_samples": 10_000})
    assert record.result == serial
    pids = {pid for node in record.placement.values() for pid in node}
    if inner == "threading":
        assert pids == {os.getpid()}
    else:
        assert os.getpid() not in pids and pids


@pytest.mark.parametrize("inner", ["loky", "multiprocessing"])
def test_item_errors_keep_their_type_and_item_on_every_inner(inner):
    with pytest.raises(runners.TaskError) as caught:
        runners.run(testing.map_task(testing.raise_on_seven), backend="joblib", workers=2, chunksize=2,
                    options={"inner": inner}, params={"items": list(range(12))})
    assert isinstance(caught.value.exception, ValueError) and caught.value.index == 7


def memmap_report(item: Array) -> tuple[bool, float]:
    """Whether the worker got the array as a memory map, and its sum."""
    return isinstance(item.values, np.memmap), float(item.values.sum())


@dataclass
class Array:
    values: np.ndarray


@pytest.mark.parametrize(("max_nbytes", "memmapped"), [("1M", True), (None, False)])
def test_large_numpy_arguments_are_memmapped_above_max_nbytes(max_nbytes, memmapped):
    items = [Array(np.full(300_000, float(i))) for i in range(4)]  # 2.4 MB each
    record = runners.run(testing.map_task(memmap_report), backend="joblib", workers=2, chunksize=1,
                         options={"max_nbytes": max_nbytes}, params={"items": items})
    assert [total for _, total in record.result] == [300_000.0 * i for i in range(4)]
    assert {flag for flag, _ in record.result} == {memmapped}


def test_small_arrays_are_copied_not_memmapped():
    items = [Array(np.ones(10))]
    record = runners.run(testing.map_task(memmap_report), backend="joblib", workers=2,
                         params={"items": items})
    assert record.result == [(False, 10.0)]


def test_a_killed_loky_worker_is_reported_as_worker_lost():
    with pytest.raises(runners.WorkerLost) as caught:
        runners.run(testing.map_task(kill_on_three), backend="joblib", workers=2, chunksize=1,
                    params={"items": list(range(6))})
    assert caught.value.backend == "joblib" and caught.value.items


def kill_on_three(item: int) -> int:
    import signal

    if item == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return item


def test_cli_runs_pi_and_leaves_no_loky_worker():
    done = run_cli("exec", "pi", "--backend", "joblib", "--workers", "2", "--set", "samples=200000",
                   "--set", "backend.batch_size=1", "--set", "backend.verbose=0")
    assert done.returncode == 0, done.stderr
    assert "check    ok" in done.stdout


@pytest.mark.parametrize(("setting", "needles"), [
    ("backend.inner=spark", ["backend.inner", "'spark'", "'loky'", "'threading'"]),
    ("backend.max_nbytes=lots", ["backend.max_nbytes", "'1M'", "'lots'"]),
    ("backend.batch_size=0", ["backend.batch_size", "at least 1"]),
    ("backend.innr=loky", ["unknown key 'innr'", "did you mean 'inner'", "max_nbytes"]),
])
def test_bad_options_are_usage_errors_naming_the_choices(setting, needles):
    done = run_cli("exec", "tiny", "--backend", "joblib", "--set", setting)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr


def test_the_ray_bridge_never_starts_a_ray_that_listens_everywhere(monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    done = run_cli("exec", "tiny", "--backend", "joblib", "--set", "backend.inner=ray", timeout=120)
    assert done.returncode == 2, done.stderr
    assert "backend.inner=ray" in done.stderr and "--backend ray" in done.stderr
    assert "Traceback" not in done.stderr
