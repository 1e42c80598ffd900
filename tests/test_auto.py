"""The auto back-end: measures in the driver, then stays serial or hands over, and says which."""

from __future__ import annotations

import json
import os
import re

import pytest

import runners
from runners import testing
from tests.conftest import installed_backends, run_cli


def workers_used(record) -> set[int]:
    return {pid for pids in record.placement.values() for pid in pids}


def test_tiny_items_stay_serial_in_the_driver():
    record = runners.run("tiny", backend="auto", workers=2, params={"n": 200_000})
    assert record.result == 200_000 * 200_001 // 2
    assert record.extra["auto"]["choice"] == "serial"
    assert workers_used(record) == {os.getpid()}


def test_a_short_run_stays_serial():
    record = runners.run("pi", backend="auto", workers=2, params={"samples": 20_000, "item_samples": 1_000})
    assert record.check.ok
    assert record.extra["auto"]["choice"] == "serial" and workers_used(record) == {os.getpid()}


def test_enough_costly_work_goes_to_the_parallel_back_end_and_matches_serial():
    params = {"samples": 1_500_000, "item_samples": 50_000}  # 30 items of ~25 ms
    record = runners.run("pi", backend="auto", workers=2, params=params)
    assert record.extra["auto"]["choice"] == "futures", record.extra["auto"]["reason"]
    assert len(workers_used(record) - {os.getpid()}) == 2  # the probe ran here, the rest in 2 workers
    assert record.result == runners.run("pi", params=params).result


def test_the_parallel_option_picks_the_back_end_that_takes_over():
    record = runners.run("pi", backend="auto", workers=2, options={"parallel": "multiprocessing"},
                         params={"samples": 1_500_000, "item_samples": 50_000})
    assert record.extra["auto"]["choice"] == "multiprocessing" and record.check.ok


def test_one_worker_never_starts_a_pool():
    record = runners.run("pi", backend="auto", workers=1, params={"samples": 600_000, "item_samples": 50_000})
    assert record.extra["auto"]["choice"] == "serial" and workers_used(record) == {os.getpid()}


def test_item_errors_keep_their_type_and_index_after_the_hand_over():
    items = [[i, 0.03] for i in range(30)] + [[30, 0.0]]
    with pytest.raises(runners.TaskError) as caught:
        runners.run(testing.map_task(testing.raise_or_sleep), backend="auto", workers=2,
                    params={"items": items})
    assert caught.value.index == 30 and "refuses" in str(caught.value)


@pytest.mark.parametrize(("parallel", "error"), [("auto", runners.ConfigError),
                                                 ("nope", runners.BackendNotFound)])
def test_a_bad_parallel_back_end_is_refused_before_any_item_runs(parallel, error):
    with pytest.raises(error):
        runners.run("tiny", backend="auto", options={"parallel": parallel}, params={"n": 5})


def test_cli_json_shows_the_choice_and_why():
    done = run_cli("exec", "pi", "--backend", "auto", "--workers", "2", "--set", "samples=1500000",
                   "--set", "item_samples=50000", "--json", timeout=120)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["backend"] == "auto"
    decision = record["extra"]["auto"]
    assert decision["choice"] == "futures" and "2 futures workers save" in decision["reason"]
    assert record["processes"] == 3  # the driver's probe plus two workers


def measured_item_seconds(reason: str) -> float:
    match = re.search(r"measured ([\d.]+) (ns|us|ms|s) per item", reason)
    assert match, reason
    return float(match.group(1)) * {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[match.group(2)]


def test_cli_text_says_it_went_parallel_and_why():
    done = run_cli("exec", "pi", "--backend", "auto", "--workers", "2", "--set", "samples=1500000",
                   "--set", "item_samples=50000", timeout=120)
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("auto "))
    assert line.startswith("auto     chose futures: measured ")
    # the measured cost is the real one: 50,000 pure-Python samples take milliseconds, not micro
    assert 1e-4 < measured_item_seconds(line) < 1.0, line
    assert "more than their start-up" in line


def test_cli_text_says_it_stayed_serial_and_why():
    # enough tiny items that measuring them takes longer than the probe (20 ms), on a fast machine too
    done = run_cli("exec", "tiny", "--backend", "auto", "--workers", "2", "--set", "n=2000000")
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stdout.splitlines() if line.startswith("auto "))
    assert line.startswith("auto     chose serial: measured "), line
    assert measured_item_seconds(line) < 1e-4, line  # a tiny item: well under 100 us
    assert "costs more than running them" in line or "less than their start-up" in line


def test_cli_text_says_when_the_work_was_too_short_to_decide():
    done = run_cli("exec", "tiny", "--backend", "auto", "--workers", "2", "--set", "n=10")
    line = next(line for line in done.stdout.splitlines() if line.startswith("auto "))
    assert line.startswith("auto     chose serial: all the work took "), line
    assert "less than the 20 ms it measures before deciding" in line


def test_other_back_ends_print_no_auto_line():
    done = run_cli("exec", "tiny", "--backend", "serial", "--set", "n=10")
    assert done.returncode == 0 and "auto " not in done.stdout


def test_auto_sizes_batches_for_the_back_end_that_may_take_over():
    if "ray" not in installed_backends():
        pytest.skip("ray is not installed")
    auto = runners.load_backend("auto")
    options = auto.Options(parallel="ray")
    with auto(options, 2) as started:  # start() loads the class only: no Ray is started
        assert started.max_batch_bytes == runners.load_backend("ray").max_batch_bytes is not None
