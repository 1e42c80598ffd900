"""One set of cases for every installed back-end: a back-end is real when it passes all of them."""

from __future__ import annotations

import pytest

import runners
from runners import testing
from tests.conftest import installed_backends

BACKENDS = installed_backends()
SMALL = {
    "pi": {"samples": 200_000, "item_samples": 20_000},
    "primes": {"start": 1_000, "stop": 6_000},
    "factorize": {"numbers": [2, 97, 360, 1_000_003 * 97, 2**31 - 1, 600_851_475_143]},
    "sumsq": {"n": 12_345, "parts": 7},
    "tiny": {"n": 1_000},
    "iowait": {"n": 6, "seconds": 0.01},
}


def run(backend: str, task, workers: int = 2, **kw):
    skip_unless_runnable(backend, task)
    return runners.run(task, backend=backend, workers=workers, **kw)


def skip_unless_runnable(backend: str, task) -> None:
    """A back-end that runs coroutines takes only tasks with an async function (the engine refuses others)."""
    if runners.load_backend(backend).runs_coroutines and runners.load_task(task).run_async is None:
        pytest.skip(f"the {backend} back-end runs only tasks with an async function")


@pytest.fixture(scope="module")
def serial_results():
    return {name: runners.run(name, params=p).result for name, p in SMALL.items()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("task", sorted(SMALL))
def test_result_equals_serial_and_passes_check(backend, task, serial_results):
    record = run(backend, task, params=SMALL[task])
    assert record.result == serial_results[task]
    assert record.check.ok, record.check
    assert record.items == len(list(runners.load_task(task).split(record_params(task), record.seed)))


def record_params(task):
    t = runners.load_task(task)
    return t.params(**SMALL[task])


@pytest.mark.parametrize("backend", BACKENDS)
def test_results_come_back_in_item_order_when_items_finish_out_of_order(backend):
    items = [[i, 0.02 * ((7 * i) % 5)] for i in range(20)]
    record = run(backend, testing.map_task(testing.sleep_then_echo), workers=3, chunksize=1,
                 params={"items": items})
    assert record.result == list(range(20))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("n", "workers"), [(0, 2), (1, 2), (3, 5)],
                         ids=["empty", "one-item", "more-workers"])
def test_edge_sizes(backend, n, workers):
    record = run(backend, "tiny", workers=workers, params={"n": n})
    assert record.result == n * (n + 1) // 2
    assert record.items == n


@pytest.mark.parametrize("backend", BACKENDS)
def test_explicit_chunksize_is_honoured(backend):
    record = run(backend, "tiny", chunksize=7, params={"n": 100})
    assert record.batches == 15  # ceil(100 / 7)
    assert record.result == 5050


@pytest.mark.parametrize("backend", BACKENDS)
def test_item_exception_keeps_type_message_traceback_and_item(backend):
    with pytest.raises(runners.TaskError) as caught:
        run(backend, testing.map_task(testing.raise_on_seven), chunksize=3,
            params={"items": list(range(20))})
    error = caught.value
    assert isinstance(error.exception, ValueError)
    assert str(error.exception) == "item 7 is unlucky"
    assert error.index == 7 and error.item == 7
    assert "raise_on_seven" in error.remote_traceback
    assert "item 7" in str(error)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unpicklable_exception_still_reports_its_type_and_message(backend):
    with pytest.raises(runners.TaskError) as caught:
        run(backend, testing.map_task(testing.raise_unpicklable), params={"items": [5]})
    assert "Unpicklable" in f"{type(caught.value.exception).__name__} {caught.value.exception}"
    assert "cannot travel: 5" in str(caught.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_system_exit_in_an_item_is_a_task_failure(backend):
    with pytest.raises(runners.TaskError) as caught:
        run(backend, testing.map_task(testing.exit_in_item), params={"items": list(range(6))})
    assert isinstance(caught.value.exception, SystemExit)
    assert caught.value.index == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_gives_the_same_pi_for_any_worker_count(backend, serial_results):
    skip_unless_runnable(backend, "pi")
    for workers in (1, 2, 3):
        record = run(backend, "pi", workers=workers, params=SMALL["pi"])
        assert record.result == serial_results["pi"], f"workers={workers}"
    other = run(backend, "pi", params=SMALL["pi"], seed=7)
    assert other.result != serial_results["pi"]  # the seed matters


@pytest.mark.parametrize("backend", [b for b in BACKENDS if runners.load_backend(b).separate_processes])
def test_a_lambda_is_refused_before_any_worker_starts(backend):
    task = runners.Task("lam", testing.EchoParams, lambda p, s: p.items, lambda x: x,
                        lambda values, p: list(values))
    with pytest.raises(runners.NotPicklable, match="module"):
        runners.run(task, backend=backend, params={"items": [1]})


# auto runs these few quick items in the driver (it hands over only when parallel work pays)
@pytest.mark.parametrize("backend", [b for b in BACKENDS
                                     if runners.load_backend(b).separate_processes and b != "auto"])
@pytest.mark.parametrize("fn", [testing.return_unpicklable, testing.return_open_file],
                         ids=["lambda", "open-file"])
def test_a_result_that_does_not_pickle_is_its_items_failure(backend, fn):
    # One rule on every back-end whose items run in other processes, whatever its transport (pickle,
    # cloudpickle, MPI): a result must pickle with the standard pickle module.
    with pytest.raises(runners.TaskError) as caught:
        run(backend, testing.map_task(fn), chunksize=4, params={"items": [0, 1, 2, 3]})
    assert caught.value.index == 0 and caught.value.item == 0
    assert "cannot be pickled to send it back to the driver" in str(caught.value)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if not runners.load_backend(b).separate_processes])
def test_in_process_backends_hand_back_any_result_as_it_is(backend):
    if runners.load_backend(backend).runs_coroutines:
        pytest.skip("a plain function task; this back-end runs async ones")
    record = run(backend, testing.map_task(testing.return_open_file), params={"items": [5]})
    with record.result[0] as returned:  # the very object, never pickled
        assert returned.name == testing.__file__ and not returned.closed


@pytest.mark.parametrize("backend", BACKENDS)
def test_items_report_the_processes_that_ran_them(backend):
    record = run(backend, testing.map_task(testing.whereami), chunksize=1,
                 params={"items": list(range(8))})
    ran = {tuple(x) for x in record.result}
    assert sum(sum(p.values()) for p in record.placement.values()) == 8
    assert {pid for _, pid in ran} == {pid for p in record.placement.values() for pid in p}
