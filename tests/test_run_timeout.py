"""The limit on a whole run (`run_timeout`) through the Python API: what it raises, what it keeps, and
what it leaves as it found it. The same limit on every back-end through the CLI is in the fault matrix."""

from __future__ import annotations

import signal
import threading
import time

import pytest

import runners
from runners import testing

SLEEPY = testing.map_task(testing.sleep_seconds)


def test_a_run_past_its_limit_raises_run_timeout_with_what_finished():
    began = time.monotonic()
    with pytest.raises(runners.RunTimeout) as caught:
        runners.run(SLEEPY, backend="multiprocessing", workers=2, chunksize=1,
                    params={"items": [0.05] * 4 + [30.0] * 4}, run_timeout=2.0)
    assert time.monotonic() - began < 15  # not the 60 s the sleeping items would take
    error = caught.value
    assert error.limit == 2.0 and error.total == 8 and error.backend == "multiprocessing"
    assert error.finished == 4  # the four quick items, and none of the sleeping ones
    assert "run_timeout" in str(error) and "4 of 8 items finished" in str(error)


def test_serial_items_run_in_the_driver_are_interrupted_and_not_reported_as_the_items_failure():
    with pytest.raises(runners.RunTimeout) as caught:
        runners.run(SLEEPY, backend="serial", params={"items": [0.0, 30.0]}, run_timeout=0.5)
    assert caught.value.finished == 1
    assert not isinstance(caught.value.__cause__, runners.TaskError)


def test_a_run_within_its_limit_is_unaffected_and_the_alarm_handler_is_restored():
    def mine(signum, frame):
        raise AssertionError("the user's own SIGALRM handler must not fire")

    previous = signal.signal(signal.SIGALRM, mine)
    try:
        record = runners.run(SLEEPY, backend="futures", workers=2, params={"items": [0.01] * 6},
                             run_timeout=30)
        assert record.result == [0.01] * 6
        assert signal.getsignal(signal.SIGALRM) is mine
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)  # disarmed
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_run_timeout_off_the_main_thread_is_refused_before_any_worker_starts():
    caught: list[BaseException] = []

    def in_a_thread():
        try:
            runners.run(SLEEPY, backend="multiprocessing", workers=2, params={"items": [0.0]},
                        run_timeout=5)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            caught.append(exc)

    thread = threading.Thread(target=in_a_thread, name="helper")
    thread.start()
    thread.join(60)
    assert len(caught) == 1 and isinstance(caught[0], runners.ConfigError)
    assert "main thread" in str(caught[0]) and "'helper'" in str(caught[0])


@pytest.mark.parametrize("bad", [0, -1, "soon", True, float("inf")])
def test_bad_run_timeout_values_are_config_errors(bad):
    with pytest.raises(runners.ConfigError, match="run_timeout: expected a positive number of seconds"):
        runners.plan(runners.Job(SLEEPY, run_timeout=bad))


def test_run_timeout_is_read_from_a_job_file(tmp_path):
    job_file = tmp_path / "job.yaml"
    job_file.write_text("task: tiny\nrun_timeout: 12.5\n")
    assert runners.plan(runners.job_from_sources(job_file)).policy.run_timeout == 12.5
