"""Fuzz the config loader and the --set parser: any input is a valid job or a clean ConfigError,
decided before anything is spawned."""

from __future__ import annotations

import psutil
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runners
from runners import ConfigError, job_from_sources, parse_sets, plan
from tests.conftest import run_cli

KNOWN_TASKS = ["pi", "primes", "tiny", "factorize", "sumsq", "iowait"]
LOCAL_BACKENDS = ["serial", "threads", "multiprocessing", "futures"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=8)
job_keys = st.sampled_from(["task", "params", "backend", "workers", "chunksize", "seed", "retries",
                            "retry_on", "timeout", "run_timeout", "fail_fast", "workerz", "param",
                            ""])
param_names = st.sampled_from(["samples", "n", "start", "stop", "numbers", "seconds", "parts", "method",
                               "item_samples", "bogus"])
param_maps = st.dictionaries(param_names, values, max_size=4)
jobs = st.fixed_dictionaries(
    {"task": st.one_of(st.sampled_from(KNOWN_TASKS), st.text(alphabet="abcxyz_", max_size=8))},
    optional={
        "params": st.one_of(param_maps, values),
        "backend": st.one_of(st.sampled_from(LOCAL_BACKENDS), st.fixed_dictionaries(
            {"name": st.sampled_from(LOCAL_BACKENDS)},
            optional={"start_method": values, "maxtasksperchild": values, "colour": values})),
        "workers": values, "chunksize": values, "seed": values, "retries": values,
        "retry_on": values, "timeout": values, "run_timeout": values, "fail_fast": values,
    },
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def plan_or_config_error(path):
    children = len(psutil.Process().children(recursive=True))
    try:
        the_plan = plan(job_from_sources(path))
    except ConfigError as exc:
        message = str(exc)
        assert message and "Traceback" not in message
        return None
    finally:
        assert len(psutil.Process().children(recursive=True)) == children  # nothing spawned
    return the_plan


@FUZZ
@given(jobs)
def test_any_job_mapping_is_a_valid_plan_or_a_config_error(tmp_path_factory, job):
    path = tmp_path_factory.mktemp("fuzz") / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    the_plan = plan_or_config_error(path)
    if the_plan is not None:  # what passed validation is really within bounds
        assert 1 <= the_plan.workers <= 4096
        assert the_plan.chunksize is None or the_plan.chunksize >= 1


@FUZZ
@given(st.dictionaries(job_keys, values, max_size=5))
def test_arbitrary_top_level_keys_and_values(tmp_path_factory, job):
    path = tmp_path_factory.mktemp("fuzz") / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    plan_or_config_error(path)


@FUZZ
@given(st.text(max_size=80))
def test_arbitrary_text_as_a_config_file(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "job.yaml"
    path.write_text(text, encoding="utf-8")
    plan_or_config_error(path)


@FUZZ
@given(st.lists(st.text(max_size=30), max_size=5))
def test_arbitrary_set_pairs_parse_or_fail_cleanly(pairs):
    try:
        params, options = parse_sets(pairs)
    except ConfigError as exc:
        assert "--set" in str(exc)
        return
    try:
        plan(runners.Job("tiny", params, "serial", options))
    except ConfigError:
        pass


def test_fuzzed_inputs_through_the_cli_exit_2_without_a_traceback(tmp_path):
    for text in ["task: pi\nworkers: 99999999\n", "task: pi\nseed: -1\n", "task: [1\n", "{}",
                 "task: pi\nparams: {samples: 1e40}\n", "task: tiny\nretries: -2\n"]:
        path = tmp_path / "job.yaml"
        path.write_text(text)
        done = run_cli("exec", "--config", str(path))
        assert done.returncode == 2, (text, done.stderr)
        assert "Traceback" not in done.stderr


def test_missing_config_file_is_a_clear_error(tmp_path):
    done = run_cli("exec", "--config", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2 and "nope.yaml" in done.stderr and "Traceback" not in done.stderr
