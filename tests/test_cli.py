"""The CLI as a user drives it: real subprocesses, exit codes, messages, no raw tracebacks."""

from __future__ import annotations

import json
import math
import os
import textwrap

import pytest

from tests.conftest import ROOT, installed_backends, run_cli


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


def test_backend_whose_library_is_missing_names_its_own_install_hint(tmp_path):
    # A plugin registered by a real (tiny) distribution whose library is not installed.
    plugin = tmp_path / "runners_ghost.py"
    plugin.write_text(textwrap.dedent("""
        from runners.backend import Backend
        class GhostBackend(Backend):
            name = "ghost"
            requires = ("ghost_library_that_is_not_installed",)
            install = "pip install runners-ghost"
            def start(self): pass
            def run(self, batches): return iter(())
    """))
    dist = tmp_path / "runners_ghost-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: runners-ghost\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[runners.backends]\nghost = runners_ghost:GhostBackend\n")
    done = run_cli("exec", "tiny", "--backend", "ghost", env={"PYTHONPATH": str(tmp_path)})
    assert_clean_usage_error(done, "ghost", "pip install runners-ghost")  # its own hint, not runners'
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


# -- Config errors: one line, naming the file (or the flag) and the key path -------------------------

@pytest.mark.parametrize(("yaml_text", "needles"), [
    ("task: pi\nbackend: {name: futures, start_method: spwan}\n",
     ["job.yaml: backend.start_method:", "'spwan'", "did you mean 'spawn'?"]),
    ("task: pi\nparams: {method: nunpy}\n", ["job.yaml: params.method:", "did you mean 'numpy'?"]),
    ("task: pi\nparams: {samples: lots}\n", ["job.yaml: params.samples: expected an integer", "'lots'"]),
    ("task: factorize\nparams: {numbers: [12, twelve]}\n", ["job.yaml: params.numbers[1]:", "'twelve'"]),
    ("task: pie\n", ["job.yaml: task: unknown task 'pie'", "did you mean 'pi'"]),
    ("task: pi\nbackend: futurs\n",
     ["job.yaml: backend: unknown back-end 'futurs'", "did you mean 'futures'"]),
    ("task: pi\nseed: -1\n", ["job.yaml: seed: expected an integer from 0"]),
    ("task: pi\nfail_fast: maybe\n", ["job.yaml: fail_fast: expected true or false", "'maybe'"]),
    ("task: pi\nbackend: {name: serial}\ntimeout: 5\n", ["job.yaml: timeout:", "cannot stop a running item"]),
], ids=["enum-option", "enum-param", "param-type", "list-element", "task", "backend", "seed", "fail-fast",
        "timeout-backend"])
def test_config_errors_name_the_file_and_the_key_path(tmp_path, yaml_text, needles):
    config = tmp_path / "job.yaml"
    config.write_text(yaml_text)
    done = run_cli("exec", "--config", str(config))
    assert_clean_usage_error(done, *[needle.replace("job.yaml", str(config)) for needle in needles])
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize(("args", "env", "needles"), [
    (["--set", "samples=lots"], {}, ["--set samples: params.samples", "'lots'"]),
    (["--backend", "futures", "--set", "backend.start_method=spwan"], {},
     ["--set backend.start_method: backend.start_method", "did you mean 'spawn'?"]),
    ([], {"RUNNERS_BACKEND": "futurs"}, ["environment RUNNERS_BACKEND: backend:", "did you mean 'futures'"]),
    (["--workers", "0"], {}, ["workers: expected a positive integer"]),
], ids=["set-param", "set-option", "environment", "flag"])
def test_errors_from_flags_and_the_environment_name_them(args, env, needles):
    done = run_cli("exec", "pi", *args, env=env)
    assert_clean_usage_error(done, *needles)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_set_value_beats_the_file_and_takes_the_blame(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text("task: pi\nparams: {samples: 1000}\n")
    done = run_cli("exec", "--config", str(config), "--set", "samples=many")
    assert_clean_usage_error(done, "--set samples: params.samples", "'many'")
    assert str(config) not in done.stderr


def test_a_good_near_miss_is_not_suggested_for_a_far_one(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text("task: pi\nbackend: {name: futures, start_method: zzzz}\n")
    done = run_cli("exec", "--config", str(config))
    assert_clean_usage_error(done, "'zzzz'", "one of 'fork', 'spawn', 'forkserver'")
    assert "did you mean" not in done.stderr


def test_exec_given_a_batch_file_names_the_batch_command():
    done = run_cli("exec", "--config", "conf/sweep.yaml")
    assert_clean_usage_error(done, "conf/sweep.yaml is a batch file", "runners batch conf/sweep.yaml")
    assert len(done.stderr.strip().splitlines()) == 1


# -- Every Job field has a flag ----------------------------------------------------------------------

FLAG_OF_FIELD = {"task": "TASK", "params": "--set", "backend": "--backend", "options": "--set",
                 "workers": "--workers", "chunksize": "--chunksize", "seed": "--seed", "retries": "--retries",
                 "retry_on": "--retry-on", "timeout": "--timeout", "fail_fast": "--keep-going / --fail-fast",
                 "run_timeout": "--run-timeout"}


def test_every_job_field_has_a_flag():
    import dataclasses

    import runners

    assert {f.name for f in dataclasses.fields(runners.Job)} == set(FLAG_OF_FIELD)
    usage = run_cli("exec", "--help").stdout
    for flag in FLAG_OF_FIELD.values():
        for word in flag.split(" / "):
            assert word in usage, word


FLAKY = """
import os

class Flaky(Exception):
    pass

def fail_first_time(item):
    marker = os.path.join({folder!r}, f"tried-{{item}}")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise Flaky(f"item {{item}} fails once")
    return item * 10
"""


@pytest.mark.parametrize("backend", ["serial", "futures"])
def test_retry_on_reruns_items_that_raise_the_named_exception(tmp_path, backend):
    (tmp_path / "flaky.py").write_text(FLAKY.format(folder=str(tmp_path / "markers")))
    (tmp_path / "markers").mkdir()
    common = ["exec", "flaky:fail_first_time", "--backend", backend, "--set", "n=4", "--chunksize", "1",
              "--json"]
    done = run_cli(*common, cwd=tmp_path)
    assert done.returncode == 1 and "raised Flaky: item" in done.stderr  # not named: not retried
    for marker in (tmp_path / "markers").iterdir():
        marker.unlink()
    done = run_cli(*common, "--retry-on", "Flaky", "--retries", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["result"] == [0, 10, 20, 30] and record["attempts"] == {"2": 4}


def test_fail_fast_flag_overrides_a_keep_going_file(tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text("task: 'runners.testing:raise_or_sleep'\nfail_fast: false\nchunksize: 1\n"
                      "params: {items: [[0, 0.0], [1, 0.0], [2, 0.01]]}\n")
    going = run_cli("exec", "--config", str(config))
    assert going.returncode == 1 and "2 of 3 batches failed" in going.stderr
    stopping = run_cli("exec", "--config", str(config), "--fail-fast")
    assert stopping.returncode == 1 and "batches failed" not in stopping.stderr
    assert "item 0 (" in stopping.stderr or "item 1 (" in stopping.stderr


# -- Task modules: found as `python -m` finds them; their failures are config errors -----------------

def run_script(*args, cwd):
    """`runners ARGS` through the installed console script (not `python -m`, which puts the current
    folder on sys.path by itself), as a user types it."""
    import subprocess
    import sys
    import time
    import uuid
    from pathlib import Path

    from tests.conftest import tagged_processes

    script = Path(sys.executable).with_name("runners")
    tag = uuid.uuid4().hex
    env = {**os.environ, "RUNNERS_TEST_TAG": tag}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([str(script), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)
    deadline = time.monotonic() + 15  # as run_cli: MPI's segment sweeper outlives the job by a poll
    while (left := tagged_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, [p.cmdline() for p in left]
    return done


@pytest.mark.parametrize("backend", [b for b in installed_backends() if b != "asyncio"])
def test_module_function_is_found_in_the_current_folder(tmp_path, backend):
    (tmp_path / "mymod.py").write_text("def cube(x):\n    return x ** 3\n")
    # Workers that start afresh must import it too: spawn where a start method can be chosen.
    spawn = ["--set", "backend.start_method=spawn"] if backend in ("futures", "multiprocessing") else []
    done = run_script("exec", "mymod:cube", "--backend", backend, "--workers", "2", *spawn, "--set", "n=5",
                      "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["result"] == [0, 1, 8, 27, 64]


def test_a_missing_module_says_where_it_was_looked_for(tmp_path):
    done = run_script("exec", "nosuchmod:fn", cwd=tmp_path)
    assert_clean_usage_error(done, "no module named 'nosuchmod' in the current folder")


@pytest.mark.parametrize(("source", "ref", "needles"), [
    ("x = 1\ny = (\n", "broken.py", ["broken.py:2: SyntaxError: '(' was never closed"]),
    ("x = 1\ny = (\n", "broken:fn", ["broken.py:2: SyntaxError"]),
    ("def f():\n  return 1\n    return 2\n", "broken:f", ["broken.py:3: IndentationError"]),
    ("import json\n\ndata = json.loads('{')\n", "broken.py", ["broken.py:3: JSONDecodeError"]),
    ("def load():\n    return 1 / 0\n\nvalue = load()\n", "broken:load",
     ["broken.py:2: ZeroDivisionError: division by zero", "while importing broken"]),
    ("import not_installed_anywhere\n", "broken:fn",
     ["broken.py:1: ModuleNotFoundError: No module named 'not_installed_anywhere'"]),
    ("import sys\nsys.exit(3)\n", "broken:fn", ["broken.py:2: it calls sys.exit(3) when imported"]),
], ids=["syntax-file", "syntax-module", "indentation", "raises-in-library", "raises-in-function",
        "missing-import", "sys-exit"])
def test_a_task_module_that_fails_to_import_is_a_one_line_config_error(tmp_path, source, ref, needles):
    (tmp_path / "broken.py").write_text(source)
    done = run_cli("exec", ref, cwd=tmp_path)
    assert_clean_usage_error(done, *needles)
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert str(tmp_path / "broken.py") in done.stderr


COMBINE_RAISES = """
from dataclasses import dataclass
from runners import Task, param

@dataclass(frozen=True)
class Params:
    n: int = param(6)

def split(params, seed):
    return range(params.n)

def double(x):
    return 2 * x

def combine(values, params):
    total = sum(values)
    return {"mean": total / (params.n - 6)}

TASK = Task("divides", Params, split, double, combine)
"""


@pytest.mark.parametrize("backend", ["serial", "futures"])
def test_an_exception_in_combine_is_a_task_error_with_the_task_traceback(tmp_path, backend):
    (tmp_path / "divides.py").write_text(COMBINE_RAISES)
    done = run_cli("exec", "divides.py", "--backend", backend, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last == "Error: task 'divides': its combine raised ZeroDivisionError: division by zero"
    assert "the traceback in the task's combine:" in done.stderr
    assert 'divides.py", line 17, in combine' in done.stderr
    assert "_engine.py" not in done.stderr  # the task's code only, not the runner's
    done = run_cli("exec", "divides.py", "--backend", backend, "--set", "n=8", "--json", cwd=tmp_path)
    assert done.returncode == 0 and json.loads(done.stdout)["result"] == {"mean": 28.0}
