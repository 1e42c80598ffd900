"""Fixed results files for report tests: records written as a batch writes them, at chosen times."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import runners

EPOCH = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def record(experiment: str, backend: str, workers: int, wall: float, at: float, *, task: str = "tiny",
           params: dict[str, Any] | None = None, label: str | None = None, chunk: str = "auto",
           window: str = "shared", headroom: float = 1.95, result: Any = 5050, startup: float = 0.0,
           repeat: int = 0, sample: dict[str, int] | None = None, position: int = 0) -> dict[str, Any]:
    """One run's record; `at` is when it started, in seconds from EPOCH."""
    params = {"n": 100} if params is None else params
    began = EPOCH + datetime.timedelta(seconds=at)
    return {
        "experiment": experiment, "task": task, "params": params, "cell_params": params, "backend": backend,
        "label": label or backend, "workers": workers, "chunksize": "auto", "chunksize_label": chunk,
        "options": {}, "result": result, "check": {"ok": True, "detail": "checked"},
        "timings": {"startup": startup, "compute": wall, "shutdown": 0.0, "total": wall}, "wall": wall,
        "backend_startup": startup, "cell": f"{experiment}/{label or backend}/{workers}/{chunk}/{window}",
        "repeat": repeat, "window": window, "round": repeat, "headroom": headroom, "sample": sample,
        "position": position, "started_at": began.isoformat(),
        "finished_at": (began + datetime.timedelta(seconds=wall)).isoformat(),
    }


def paired(experiment: str, walls: dict[tuple[str, int], list[float]], **common: Any) -> list[dict[str, Any]]:
    """Rounds of runs in one window: round r runs every configuration's r-th wall, one after another."""
    records, clock = [], 0.0
    rounds = max(len(v) for v in walls.values())
    for repeat in range(rounds):
        for position, ((backend, workers), values) in enumerate(walls.items()):
            records.append(record(experiment, backend, workers, values[repeat], clock, repeat=repeat,
                                  position=position, **common))
            clock += values[repeat] + 0.01
    return records


def write(folder: Path, records: list[dict[str, Any]], experiments: list[dict[str, Any]],
          profile: str = "full") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    meta = {"name": "t", "profile": profile, "experiments": experiments}
    (folder / "batch.json").write_text(json.dumps(meta))
    return folder


def report_of(folder: Path, records: list[dict[str, Any]], experiments: list[dict[str, Any]],
              plots: bool = False) -> runners._report.Report:
    write(folder, records, experiments)
    return runners.make_report(folder, plots=plots)
