"""The checks of a matrix file's values: each names the file, the key path and the value, and says
what would be valid."""

from __future__ import annotations

import difflib
import string
from collections.abc import Mapping
from typing import Any

from ._claims import CLAIMS
from ._errors import ConfigError
from ._validate import unknown_key_message

DOCUMENT_KEYS = ["source", "note", "params", "unit", "runs", "claims"]
RUN_KEYS = ["label", "backend", "workers", "chunksize", "seconds", "result"]
UNIT_KEYS = ["param", "per", "name"]
SAMPLE_KEYS = ["when", "params"]
SAMPLE_WHEN_KEYS = ["backend", "workers", "chunksize"]


def sample(value: Any, where: str) -> dict[str, Any] | None:
    """Cells (matched by `when`) too dear to run whole: run on `params` and extrapolated by items."""
    if value is None:
        return None
    sample = mapping(value, where, SAMPLE_KEYS)
    when = mapping(sample.get("when", {}), f"{where}.when", SAMPLE_WHEN_KEYS)
    params = mapping(sample.get("params"), f"{where}.params", None)
    if not when or not params:
        raise ConfigError(f"{where}: expected both 'when' (which cells, by backend, workers or "
                          "chunksize) and 'params' (the smaller size to run them at)")
    return {"when": when, "params": params}


def mapping(value: Any, where: str, allowed: list[str] | None) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r:.80}")
    if allowed is not None:
        for key in value:
            if key not in allowed:
                raise ConfigError(unknown_key_message(where, str(key), allowed))
    return dict(value)


def values(value: Any, where: str) -> list[Any]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ConfigError(f"{where}: expected at least one value, got an empty list")
    return values


def kind(value: Any, kind: type, where: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {'a string' if kind is str else kind.__name__}, got {value!r}")
    return value


def count(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where}: expected a positive integer (1 or more), got {value!r}")
    return value


def document(value: Any, where: str) -> dict[str, Any] | None:
    """The source document's published figures and the claims judged on an experiment."""
    if value is None:
        return None
    doc = mapping(value, where, DOCUMENT_KEYS)
    for i, entry in enumerate(values(doc.get("runs", []) or [{}], f"{where}.runs")):
        if entry:
            mapping(entry, f"{where}.runs[{i}]", RUN_KEYS)
    if "unit" in doc:
        unit = mapping(doc["unit"], f"{where}.unit", UNIT_KEYS)
        kind(unit.get("param"), str, f"{where}.unit.param")
        count(unit.get("per", 1), f"{where}.unit.per")
        kind(unit.get("name"), str, f"{where}.unit.name")
    known = {claim.id for claim in CLAIMS}
    for i, claim in enumerate(doc.get("claims", []) or []):
        if claim not in known:
            close = difflib.get_close_matches(str(claim), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}.claims[{i}]: unknown claim {claim!r}{hint}; the claims table "
                              f"(runners._claims) has: {', '.join(sorted(known))}")
    return doc


def length(items: Any) -> int | None:
    try:
        return len(items)
    except TypeError:
        return None




def title(template: Any, params: Mapping[str, Any], varied: list[str], where: str) -> str:
    """The experiment's title with `{param}` / `{param:,}` filled in from the params that ran."""
    template = kind(template, str, where)
    try:
        names = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
        for field in names:
            if field in varied:
                raise ConfigError(f"{where}: {{{field}}} names a parameter that varies between cells; "
                                  "the params column shows it per row")
            if field not in params:
                raise ConfigError(f"{where}: {{{field}}} is not a parameter of the task; expected one "
                                  f"of {sorted(params)}")
        return template.format_map(params)
    except ConfigError:  # the checks above (a ConfigError is also a ValueError)
        raise
    except (ValueError, IndexError) as exc:
        raise ConfigError(f"{where}: {template!r} is not a valid title template ({exc}); write "
                          "parameters as {samples} or {samples:,}, and braces as {{ }}") from None
