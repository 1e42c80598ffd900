"""Jobs from YAML files, flags, `--set key=value` and the environment: CLI > YAML > env > default."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ._engine import DEFAULT_SEED, Job
from ._errors import ConfigError
from ._validate import unknown_key_message

JOB_KEYS = ["task", "params", "backend", "workers", "chunksize", "seed", "retries", "retry_on", "timeout",
            "run_timeout", "fail_fast"]
ENV_BACKEND = "RUNNERS_BACKEND"
ENV_WORKERS = "RUNNERS_WORKERS"


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file safely; syntax errors name the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: YAML syntax error: {problem}") from exc


def parse_value(text: str) -> Any:
    """A --set value as YAML would read it, plus numbers such as 1e6 that YAML 1.1 leaves as text."""
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            number = float(value.replace("_", ""))
        except ValueError:
            return value
        return int(number) if number.is_integer() and abs(number) < 2**63 else number
    return value


def parse_sets(sets: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split `--set` pairs into (params, backend options): `backend.X=V` is an option, `X=V` a param."""
    params: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for pair in sets:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"--set {pair!r}: expected KEY=VALUE, such as --set samples=1000000 "
                "or --set backend.start_method=spawn"
            )
        target = params
        for prefix, where in (("backend.", options), ("params.", params)):
            if key.startswith(prefix):
                key, target = key[len(prefix):], where
        if not key:
            raise ConfigError(f"--set {pair!r}: the key after the dot is empty")
        target[key] = parse_value(text)
    return params, options


def job_from_sources(config: str | Path | None = None, *, task: str | None = None,
                     backend: str | None = None, workers: int | None = None,
                     chunksize: int | None = None, seed: int | None = None,
                     sets: Sequence[str] = (), env: Mapping[str, str] | None = None,
                     retries: int | None = None, timeout: float | None = None,
                     run_timeout: float | None = None, fail_fast: bool | None = None) -> Job:
    """One Job from a YAML file, flags and `--set` pairs; a flag wins over the file, the file over env."""
    env = os.environ if env is None else env
    spec = job_mapping(read_yaml(config), str(config)) if config is not None else {}
    source = str(config) if config is not None else "the command line"
    set_params, set_options = parse_sets(sets)

    file_backend = spec.get("backend", env.get(ENV_BACKEND, "serial"))
    backend_name, options = split_backend(file_backend, f"{source}: backend")
    if backend is not None and backend != backend_name:
        backend_name, options = backend, {}  # the flag replaces the file's whole backend section
    task_name = task if task is not None else spec.get("task")
    if task_name is None:
        raise ConfigError(f"{source}: no task given; name one (runners exec TASK) or set 'task:' in the file")
    return Job(
        task=task_name,
        params={**spec.get("params", {}), **set_params},
        backend=backend_name,
        options={**options, **set_options},
        workers=_first(workers, _auto(spec.get("workers"), "workers", source), _env_int(env, source)),
        chunksize=_first(chunksize, _auto(spec.get("chunksize"), "chunksize", source)),
        seed=_first(seed, spec.get("seed"), DEFAULT_SEED),
        retries=_first(retries, spec.get("retries"), Job.retries),
        retry_on=_names(spec.get("retry_on", ()), source),
        timeout=_first(timeout, spec.get("timeout")),
        run_timeout=_first(run_timeout, spec.get("run_timeout")),
        fail_fast=_first(fail_fast, spec.get("fail_fast"), Job.fail_fast),
    )


def _names(value: Any, source: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{source}: retry_on: expected a list of exception type names such as "
                          f"[ConnectionError], got {value!r}")
    return tuple(value)


def job_mapping(data: Any, source: str) -> dict[str, Any]:
    """Check the top level of a job file: a mapping with only known keys of the right kinds."""
    if data is None:
        raise ConfigError(f"{source}: the file is empty; expected a mapping with at least 'task: NAME'")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of job keys ({', '.join(JOB_KEYS)}), "
                          f"got {type(data).__name__} {data!r:.60}")
    for key in data:
        if key not in JOB_KEYS:
            raise ConfigError(unknown_key_message(source, str(key), JOB_KEYS))
    if "task" in data and not isinstance(data["task"], str):
        raise ConfigError(f"{source}: task: expected a task name, got {data['task']!r}")
    if not isinstance(data.get("params", {}), Mapping):
        raise ConfigError(f"{source}: params: expected a mapping of parameter names to values, "
                          f"got {data['params']!r}")
    return dict(data)


def split_backend(value: Any, where: str) -> tuple[str, dict[str, Any]]:
    """A config's back-end entry, `NAME` or `{name: NAME, option: value, ...}`, as (name, options)."""
    if isinstance(value, str):
        return value, {}
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        return value["name"], {k: v for k, v in value.items() if k != "name"}
    raise ConfigError(f"{where}: expected a back-end name or a mapping with 'name:' and its options, "
                      f"got {value!r}")


def _auto(value: Any, key: str, source: str) -> Any:
    if value == "auto":
        return None
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigError(f"{source}: {key}: expected a positive integer or 'auto', got {value!r}")
    return value


def _env_int(env: Mapping[str, str], source: str) -> int | None:
    text = env.get(ENV_WORKERS)
    if text is None or text == "":
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise ConfigError(f"environment {ENV_WORKERS}={text!r}: expected a positive integer")
    return int(text)


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)
