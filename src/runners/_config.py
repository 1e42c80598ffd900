"""Jobs from YAML files, flags, `--set key=value` and the environment: CLI > YAML > env > default."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._engine import DEFAULT_SEED, Job, plan, plan_backend
from ._errors import ConfigError, short_repr
from ._validate import unknown_key_message
from ._yaml import BoundExceeded, parse_yaml
from ._yaml import read_yaml as read_yaml  # where batch files are read too

JOB_KEYS = ["task", "params", "backend", "workers", "chunksize", "seed", "retries", "retry_on", "timeout",
            "run_timeout", "fail_fast"]
ENV_BACKEND = "RUNNERS_BACKEND"
ENV_WORKERS = "RUNNERS_WORKERS"


def parse_value(text: str, source: str = "--set") -> Any:
    """A --set value as YAML would read it, plus numbers such as 1e6 that YAML 1.1 leaves as text.

    Text that is not YAML is taken as a string; YAML past a config's bounds is an error (`source`).
    """
    try:
        value = parse_yaml(text, source, numbered=False) if text.strip() else ""
    except BoundExceeded:
        raise
    except ConfigError:
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
        source = f"--set {key[:60]}"
        if not sep or not key:
            raise ConfigError(
                f"--set {short_repr(pair)}: expected KEY=VALUE, such as --set samples=1000000 "
                "or --set backend.start_method=spawn"
            )
        target = params
        for prefix, where in (("backend.", options), ("params.", params)):
            if key.startswith(prefix):
                key, target = key[len(prefix):], where
        if not key:
            raise ConfigError(f"--set {short_repr(pair)}: the key after the dot is empty")
        target[key] = parse_value(text, source)
    return params, options


def job_from_sources(config: str | Path | None = None, *, task: str | None = None,
                     backend: str | None = None, workers: int | None = None,
                     chunksize: int | None = None, seed: int | None = None,
                     sets: Sequence[str] = (), env: Mapping[str, str] | None = None,
                     retries: int | None = None, retry_on: Sequence[str] | None = None,
                     timeout: float | None = None, run_timeout: float | None = None,
                     fail_fast: bool | None = None, task_required: bool = True) -> Job:
    """One valid Job from a YAML file, flags and `--set` pairs; a flag wins over the file, the file
    over the environment. It is planned here, so that a bad value's error names where it came from:
    the file (and the key path), the `--set` pair or the environment variable. With `task_required`
    false (runners.Executor), a job without a task is planned without one."""
    env = os.environ if env is None else env
    spec = job_mapping(read_yaml(config), str(config)) if config is not None else {}
    source = str(config) if config is not None else "the command line"
    set_params, set_options = parse_sets(sets)
    origins: dict[str, str | None] = {}  # key path -> what gave its value; None: a flag, named already

    file_backend = spec.get("backend", env.get(ENV_BACKEND, "serial"))
    backend_name, options = split_backend(file_backend, f"{source}: backend")
    if "backend" not in spec and ENV_BACKEND in env:
        origins["backend"] = f"environment {ENV_BACKEND}"
    env_workers = _env_int(env)
    if env_workers is not None:
        origins["workers"] = f"environment {ENV_WORKERS}"
    if config is not None:
        origins.update(_file_origins(spec, source))
    if backend is not None and backend != backend_name:
        backend_name, options = backend, {}  # the flag replaces the file's whole backend section
        origins = {k: v for k, v in origins.items() if not k.startswith("backend")}
    flags = {"task": task, "backend": backend, "workers": workers, "chunksize": chunksize, "seed": seed,
             "retries": retries, "retry_on": retry_on, "timeout": timeout, "run_timeout": run_timeout,
             "fail_fast": fail_fast}
    origins.update((key, None) for key, value in flags.items() if value is not None)
    origins.update((f"params.{key}", f"--set {key}") for key in set_params)
    origins.update((f"backend.{key}", f"--set backend.{key}") for key in set_options)

    task_name = task if task is not None else spec.get("task")
    if task_name is None and task_required:
        raise ConfigError(f"{source}: no task given; name one (runners exec TASK) or set 'task:' in the file")
    job = Job(
        task=task_name,
        params={**spec.get("params", {}), **set_params},
        backend=backend_name,
        options={**options, **set_options},
        workers=_first(workers, _auto(spec.get("workers"), "workers", source), env_workers),
        chunksize=_first(chunksize, _auto(spec.get("chunksize"), "chunksize", source)),
        seed=_first(seed, spec.get("seed"), DEFAULT_SEED),
        retries=_first(retries, spec.get("retries"), Job.retries),
        retry_on=tuple(retry_on) if retry_on is not None else _names(spec.get("retry_on", ()), source),
        timeout=_first(timeout, spec.get("timeout")),
        run_timeout=_first(run_timeout, spec.get("run_timeout")),
        fail_fast=_first(fail_fast, spec.get("fail_fast"), Job.fail_fast),
    )
    try:
        plan(job) if task_name is not None else plan_backend(job)
    except ConfigError as exc:
        raise _located(exc, origins) from exc
    return job


def _file_origins(spec: Mapping[str, Any], source: str) -> dict[str, str]:
    origins = dict.fromkeys(spec, source)
    origins.update((f"params.{key}", source) for key in spec.get("params", {}))
    if isinstance(spec.get("backend"), Mapping):
        origins.update((f"backend.{key}", source) for key in spec["backend"] if key != "name")
    return origins


def _located(exc: ConfigError, origins: Mapping[str, str | None]) -> ConfigError:
    """`exc`, led by the file, `--set` pair or variable that gave the bad value, where one did."""
    key = exc.key
    if key is None:
        return exc
    paths = _key_prefixes(key)
    origin = next((origins[path] for path in paths if path in origins), None)
    if origin is None:
        return exc
    message = str(exc)
    if not any(message.startswith(f"{path}:") for path in paths):
        message = f"{key}: {message}"
    return type(exc)(f"{origin}: {message}", key)


def _key_prefixes(key: str) -> list[str]:
    """`params.items[2].x`, `params.items[2]`, `params.items`, `params`: the longest first."""
    cuts = [match.start() for match in re.finditer(r"[.\[]", key)]
    return [key] + [key[:cut] for cut in reversed(cuts)]


def _names(value: Any, source: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{source}: retry_on: expected a list of exception type names such as "
                          f"[ConnectionError], got {short_repr(value)}")
    return tuple(value)


def job_mapping(data: Any, source: str) -> dict[str, Any]:
    """Check the top level of a job file: a mapping with only known keys of the right kinds."""
    if data is None:
        raise ConfigError(f"{source}: the file is empty; expected a mapping with at least 'task: NAME'")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of job keys ({', '.join(JOB_KEYS)}), "
                          f"got {type(data).__name__} {short_repr(data)}")
    if "experiments" in data:  # the key that makes a batch file
        raise ConfigError(f"{source} is a batch file (it has 'experiments:'), not a job file; run it "
                          f"with: runners batch {source}")
    for key in data:
        if key not in JOB_KEYS:
            raise ConfigError(unknown_key_message(source, str(key), JOB_KEYS))
    if "task" in data and not isinstance(data["task"], str):
        raise ConfigError(f"{source}: task: expected a task name, got {short_repr(data['task'])}")
    if not isinstance(data.get("params", {}), Mapping):
        raise ConfigError(f"{source}: params: expected a mapping of parameter names to values, "
                          f"got {short_repr(data['params'])}")
    return dict(data)


def split_backend(value: Any, where: str) -> tuple[str, dict[str, Any]]:
    """A config's back-end entry, `NAME` or `{name: NAME, option: value, ...}`, as (name, options)."""
    if isinstance(value, str):
        return value, {}
    if isinstance(value, Mapping) and isinstance(value.get("name"), str):
        return value["name"], {k: v for k, v in value.items() if k != "name"}
    raise ConfigError(f"{where}: expected a back-end name or a mapping with 'name:' and its options, "
                      f"got {short_repr(value)}")


def _auto(value: Any, key: str, source: str) -> Any:
    if value == "auto":
        return None
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ConfigError(f"{source}: {key}: expected a positive integer or 'auto', got {short_repr(value)}")
    return value


def _env_int(env: Mapping[str, str]) -> int | None:
    text = env.get(ENV_WORKERS)
    if text is None or text == "":
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise ConfigError(f"environment {ENV_WORKERS}={short_repr(text)}: expected a positive integer")
    return int(text)


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)
