"""Fuzz the config loader and the --set parser: any input is a valid job or a clean ConfigError,
decided before anything is spawned."""

from __future__ import annotations

import importlib
import json
import random
import sys
import time

import psutil
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runners
from runners import ConfigError, job_from_sources, plan
from runners._config import parse_sets  # the CLI's own, private
from runners._errors import short_repr
from runners._yaml import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    MAX_NODES,
    MAX_STRING_CHARS,
    BoundExceeded,
    parse_yaml,
    read_yaml,
)
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


# -- Config that expands or is hostile: refused at once, in one line naming the file and the bound ----

def laughs(levels: int = 9, width: int = 9) -> str:
    """A "billion laughs" as one flow list: `levels` anchors, each listing the one before `width`
    times, so the last expands to width**levels values (9**9: 387 million)."""
    chain = [f"&l0 [{', '.join(['lol'] * width)}]"]
    chain += [f"&l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "[" + ", ".join(chain) + "]"


def laughs_in(key: str) -> str:
    """A job file that holds the billion laughs in `key`, or is one."""
    if key == "option":
        return f"task: pi\nbackend: {{name: futures, start_method: {laughs()}}}\n"
    if key == "whole file":
        return laughs() + "\n"
    return f"task: pi\nparams: {{samples: 1000}}\n{key}: {laughs()}\n"


def assert_one_line_refusal(done, *needles, limit: float = 10.0):
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert done.seconds < limit, f"refused after {done.seconds:.1f} s"  # a hang guard, not a speed target


def timed_cli(*args, **kwargs):
    began = time.monotonic()
    done = run_cli(*args, timeout=60, **kwargs)
    done.seconds = time.monotonic() - began
    return done


@pytest.mark.parametrize("where", ["task", "workers", "option", "whole file"])
def test_a_billion_laughs_is_refused_at_once_naming_the_file_and_the_bound(tmp_path, where):
    job = tmp_path / "laughs.yaml"
    job.write_text(laughs_in(where))
    assert_one_line_refusal(timed_cli("exec", "--config", str(job)), str(job), "more than 100,000 values")


@pytest.mark.parametrize("key", ["n", "backend.start_method"])
def test_a_billion_laughs_in_a_set_value_is_refused(key):
    assert_one_line_refusal(timed_cli("exec", "tiny", "--set", f"{key}={laughs()}"),
                            f"--set {key}", "more than 100,000 values")


def test_a_billion_laughs_in_a_batch_file_is_refused(tmp_path):
    batch = tmp_path / "batch.yaml"
    batch.write_text(f"name: laughs\nexperiments: {laughs()}\n")
    done = timed_cli("batch", str(batch), "--out", str(tmp_path / "out"))
    assert_one_line_refusal(done, str(batch), "more than 100,000 values")


def test_a_60_mb_file_is_refused_without_being_parsed(tmp_path):
    job = tmp_path / "big.yaml"
    lines = "".join(f"  - {i}\n" for i in range(4_900_000, 5_000_000))  # 1.2 MB of list items, made once
    with open(job, "w") as f:
        f.write("task: tiny\nparams:\n  items:\n")
        for _ in range(50):
            f.write(lines)
    assert job.stat().st_size > 50 * 2**20
    assert_one_line_refusal(timed_cli("exec", "--config", str(job)), str(job), "larger than 1024 KiB")


def test_binary_garbage_is_refused_as_not_text(tmp_path):
    job = tmp_path / "garbage.yaml"
    job.write_bytes(bytes(random.Random(7).randrange(256) for _ in range(4096)))
    assert_one_line_refusal(timed_cli("exec", "--config", str(job)), str(job), "not UTF-8 text")


@pytest.mark.parametrize(("text", "needle"), [
    ("[" * 10_000 + "]" * 10_000, "more than 64 levels deep"),  # libyaml's limit (1,000) comes first
    ("task: pi\nparams: " + "[" * 100 + "]" * 100 + "\n", "more than 64 levels deep"),
    ("task: pi\nparams:\n" + "".join("  " * i + f"  k{i}:\n" for i in range(80)), "more than 64 levels deep"),
    ("task: pi\nparams: &p {samples: *p}\n", "recursive"),
    ("task: pi\nparams: {method: " + "x" * 70_000 + "}\n", "longer than 65,536 characters"),
    ("task: pi\nparams: {samples: " + "9" * 5_000 + "}\n", "cannot be read"),
    ("task: pi\n\x00\n", "YAML syntax error"),
], ids=["lists-10000-deep", "lists-100-deep", "mappings-80-deep", "recursive-alias", "long-string",
        "int-of-5000-digits", "control-character"])
def test_hostile_shapes_are_refused_in_one_line(tmp_path, text, needle):
    job = tmp_path / "hostile.yaml"
    job.write_text(text)
    assert_one_line_refusal(timed_cli("exec", "--config", str(job)), str(job), needle)


def test_within_the_bounds_aliases_still_work(tmp_path):
    job = tmp_path / "aliases.yaml"
    job.write_text("task: 'runners.testing:echo'\nparams: {items: [&pair [1, 2], *pair, *pair]}\n")
    done = run_cli("exec", "--config", str(job), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == [[1, 2]] * 3


# -- The same bounds, in process: every bound holds at its edge and fails just past it ----------------

@pytest.mark.parametrize(("inside", "past"), [
    ("[" + ", ".join(["1"] * (MAX_NODES - 1)) + "]", "[" + ", ".join(["1"] * MAX_NODES) + "]"),
    ("[" * (MAX_DEPTH) + "]" * (MAX_DEPTH), "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)),
    ("x" * MAX_STRING_CHARS, "x" * (MAX_STRING_CHARS + 1)),
], ids=["nodes", "depth", "string"])
def test_each_bound_holds_at_its_edge_and_refuses_past_it(inside, past):
    parse_yaml(inside, "edge")
    with pytest.raises(BoundExceeded, match="^past:"):
        parse_yaml(past, "past")


def test_the_file_size_bound_holds_at_its_edge(tmp_path):
    job = tmp_path / "edge.yaml"
    job.write_text("# " + "x" * (MAX_FILE_BYTES - 3) + "\n")
    assert job.stat().st_size == MAX_FILE_BYTES and read_yaml(job) is None
    job.write_text("# " + "x" * (MAX_FILE_BYTES - 2) + "\n")
    with pytest.raises(BoundExceeded, match="larger than"):
        read_yaml(job)


def test_aliases_count_once_per_use():
    block = "[" + ", ".join(["1"] * 9_998) + "]"  # 9,999 values with the list itself
    # the mapping, 2 keys, the block and a list of 9 more: 1 + 2 + 9,999 + 1 + 9 * 9,999 = 99,993
    parse_yaml(f"a: &a {block}\nb: [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n", "nine uses")
    with pytest.raises(BoundExceeded):  # one more use: 109,992
        parse_yaml(f"a: &a {block}\nb: [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n", "ten uses")


def test_without_libyaml_the_python_parser_keeps_the_same_bounds(monkeypatch):
    import runners._yaml as bounded

    monkeypatch.setitem(sys.modules, "yaml.cyaml", None)  # `from yaml.cyaml import ...` now fails
    fallback = importlib.reload(bounded)
    try:
        assert fallback.PARSER[0].__name__ == "Reader"
        assert fallback.parse_yaml("task: pi\nparams: {samples: 10}\n", "plain") == {
            "task": "pi", "params": {"samples": 10}}
        with pytest.raises(fallback.BoundExceeded, match="more than 100,000 values"):
            fallback.parse_yaml(laughs(), "laughs")
        with pytest.raises(fallback.BoundExceeded, match="more than 64 levels"):
            fallback.parse_yaml("[" * 1000 + "]" * 1000, "deep")
    finally:
        monkeypatch.undo()
        importlib.reload(bounded)


@pytest.mark.timeout(20)
def test_error_messages_never_print_an_expanded_structure():
    huge: list = ["lol"] * 9
    for _ in range(9):  # 9**10 elements once expanded; a full repr would never finish
        huge = [huge] * 9
    assert len(short_repr(huge)) <= 60
    for job in (runners.Job("tiny", params={"n": huge}), runners.Job("tiny", workers=huge),
                runners.Job("tiny", seed=huge), runners.Job("tiny", retries=huge),
                runners.Job("pi", backend="futures", options={"start_method": huge})):
        with pytest.raises(ConfigError) as caught:
            plan(job)
        assert len(str(caught.value)) < 400, str(caught.value)
