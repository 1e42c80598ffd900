"""The CLI as a user drives it: real subprocesses, exit codes, messages, no raw tracebacks."""

from __future__ import annotations

import json
import math
import textwrap

import pytest

from tests.conftest import ROOT, run_cli


def assert_clean_usage_error(done, *needles):
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in done.stderr, f"{needle!r} not in {done.stderr!r}"


def test_list_shows_backends_and_tasks_with_params():
    done = run_cli("list", "--json")
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    names = {b["name"]: b for b in listing["backends"]}
    assert {"serial", "threads", "multiprocessing", "futures"} <= set(names)
    assert all(names[n]["available"] for n in ("serial", "threads", "multiprocessing", "futures"))
    tasks = {t["name"]: t for t in listing["tasks"]}
    assert {"pi", "primes", "factorize", "sumsq", "tiny", "iowait"} <= set(tasks)
    assert {"name": "samples", "default": 50_000_000} .items() <= tasks["pi"]["params"][0].items()


def test_exec_pi_on_multiprocessing_prints_result_check_and_phases():
    done = run_cli("exec", "pi", "--backend", "multiprocessing", "--workers", "2", "--set", "samples=400000")
    assert done.returncode == 0, done.stderr
    assert "check    ok" in done.stdout
    assert "start-up" in done.stdout and "compute" in done.stdout and "shut-down" in done.stdout


def test_exec_primes_with_sets_matches_the_sieve():
    done = run_cli("exec", "primes", "--backend", "futures", "--set", "start=100000", "--set", "stop=120000",
                   "--json")
    record = json.loads(done.stdout)
    assert record["result"] == count_primes_by_sieve(100_000, 120_000)
    assert record["check"]["ok"] is True


def count_primes_by_sieve(start, stop):
    is_prime = [True] * stop
    is_prime[:2] = [False, False]
    for p in range(2, math.isqrt(stop) + 1):
        if is_prime[p]:
            is_prime[p * p::p] = [False] * len(range(p * p, stop, p))
    return sum(is_prime[start:])


def test_json_output_has_every_field_and_a_correct_pi():
    done = run_cli("exec", "pi", "--backend", "futures", "--json", "--set", "samples=300000")
    record = json.loads(done.stdout)
    assert {"task", "params", "backend", "workers", "result", "check", "timings", "nodes"} <= set(record)
    assert set(record["timings"]) == {"startup", "compute", "shutdown", "total"}
    assert abs(record["result"] - math.pi) < 0.02


def test_config_file_with_overrides_flag_beats_file():
    done = run_cli("exec", "pi", "--config", "conf/pi.yaml", "--set", "samples=200000", "--backend", "serial",
                   "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["backend"] == "serial" and record["params"]["samples"] == 200_000


@pytest.mark.parametrize("path", sorted((ROOT / "conf").glob("*.yaml")))
def test_every_shipped_job_config_is_valid(path):
    text = path.read_text()
    if not text.lstrip().startswith("task:") and "\ntask:" not in text:
        pytest.skip("not a single-job file")
    from runners import job_from_sources, plan

    plan(job_from_sources(path))


def test_factorize_on_threads():
    done = run_cli("exec", "factorize", "--backend", "threads", "--set", "numbers=[360, 97, 1001]", "--json")
    assert json.loads(done.stdout)["result"] == [[2, 2, 2, 3, 3, 5], [97], [7, 11, 13]]


def test_unknown_task_lists_names_and_suggests():
    assert_clean_usage_error(run_cli("exec", "pie"), "unknown task 'pie'", "did you mean 'pi'", "primes")


def test_unknown_backend_lists_names_and_suggests():
    assert_clean_usage_error(run_cli("exec", "pi", "--backend", "futurs"),
                             "did you mean 'futures'", "multiprocessing")


def test_backend_whose_library_is_missing_names_the_extra(tmp_path):
    # A plugin registered by a real (tiny) distribution whose library is not installed.
    plugin = tmp_path / "runners_ghost.py"
    plugin.write_text(textwrap.dedent("""
        from runners import Backend
        class GhostBackend(Backend):
            name = "ghost"
            requires = ("ghost_library_that_is_not_installed",)
            extra = "ghost"
            def start(self): pass
            def run(self, batches): return iter(())
            def shutdown(self): pass
    """))
    dist = tmp_path / "runners_ghost-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: runners-ghost\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[runners.backends]\nghost = runners_ghost:GhostBackend\n")
    done = run_cli("exec", "tiny", "--backend", "ghost", env={"PYTHONPATH": str(tmp_path)})
    assert_clean_usage_error(done, "ghost", "pip install 'runners[ghost]'")
    listed = run_cli("list", env={"PYTHONPATH": str(tmp_path)})
    assert "ghost" in listed.stdout and "missing" in listed.stdout


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: pi\nparams:\n  samples: [1, 2\nworkers: 2\n")
    assert_clean_usage_error(run_cli("exec", "--config", str(bad)), f"{bad}:", "YAML syntax error")


@pytest.mark.parametrize(("yaml_text", "needles"), [
    ("task: pi\nworkerz: 2\n", ["unknown key 'workerz'", "did you mean 'workers'"]),
    ("task: pi\nparams:\n  samples: lots\n", ["params.samples", "expected an integer", "'lots'"]),
    ("task: pi\nparams:\n  sample: 10\n", ["params", "unknown key 'sample'", "samples"]),
    ("task: pi\nparams:\n  method: fortran\n", ["params.method", "one of 'python', 'numpy'"]),
    ("task: pi\nbackend: {name: futures, start_method: clone}\n", ["backend.start_method", "'clone'"]),
    ("task: pi\nbackend: {name: futures, colour: red}\n", ["unknown key 'colour'", "start_method"]),
    ("- task: pi\n", ["expected a mapping"]),
    ("", ["empty"]),
    ("task: pi\nparams:\n  samples: -5\n", ["params.samples", "at least 1"]),
    ("task: pi\nrun_timeout: soon\n", ["run_timeout", "positive number of seconds", "'soon'"]),
    ("task: pi\nrun_timeout: -1\n", ["run_timeout", "positive number of seconds", "-1"]),
], ids=["top-key", "wrong-type", "param-key", "literal", "option-value", "option-key", "list", "empty",
        "negative", "run-timeout-text", "run-timeout-negative"])
def test_bad_config_values_name_key_value_and_what_is_allowed(tmp_path, yaml_text, needles):
    config = tmp_path / "job.yaml"
    config.write_text(yaml_text)
    assert_clean_usage_error(run_cli("exec", "--config", str(config)), *needles)


@pytest.mark.parametrize("workers", ["0", "-3"])
def test_non_positive_workers_is_a_clear_error(workers):
    assert_clean_usage_error(run_cli("exec", "tiny", "--workers", workers), "workers", "positive integer")


def test_bad_set_syntax_is_a_clear_error():
    assert_clean_usage_error(run_cli("exec", "tiny", "--set", "n"), "--set 'n'", "KEY=VALUE")


def test_lambda_task_under_spawn_says_to_use_a_module_level_function(tmp_path):
    module = tmp_path / "lambda_job.py"
    module.write_text(textwrap.dedent("""
        from runners import Task
        from runners.testing import EchoParams
        TASK = Task("lam", EchoParams, lambda p, s: p.items, lambda x: x + 1, lambda v, p: list(v))
    """))
    done = run_cli("exec", f"{module}:TASK", "--backend", "futures", "--set", "backend.start_method=spawn",
                   "--set", "items=[1,2]")
    assert_clean_usage_error(done, "cannot be pickled", "top level of an importable module")


def test_user_function_by_module_and_file(tmp_path):
    module = tmp_path / "mywork.py"
    module.write_text("def square(x):\n    return x * x\n")
    done = run_cli("exec", f"{module}:square", "--backend", "futures", "--set", "backend.start_method=spawn",
                   "--set", "n=6", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == [0, 1, 4, 9, 16, 25]
    done = run_cli("exec", "mywork:square", "--backend", "multiprocessing", "--set", "items=[3, 4]",
                   "--json", env={"PYTHONPATH": str(tmp_path)})
    assert json.loads(done.stdout)["result"] == [9, 16]


def test_a_failing_item_exits_1_with_item_and_worker_traceback():
    done = run_cli("exec", "runners.testing:raise_on_seven", "--backend", "futures", "--set", "n=10")
    assert done.returncode == 1
    assert "item 7" in done.stderr and "ValueError: item 7 is unlucky" in done.stderr
    assert "raise_on_seven" in done.stderr  # the worker's traceback names the raising function
