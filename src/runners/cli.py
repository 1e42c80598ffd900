"""The command line: parse, call the library, print. No decisions live here."""

from __future__ import annotations

import dataclasses
import json
import sys
import typing
from collections.abc import Callable
from typing import Any

import click

from ._config import job_from_sources
from ._engine import Job, RunRecord, run
from ._errors import (
    ConfigError,
    FailedItems,
    ItemTimeout,
    RunnersError,
    TaskError,
    TaskStepError,
    WorkerLost,
    short_repr,
)
from ._matrix_run import read_results, run_matrix
from ._progressbar import ProgressBar
from ._registry import backend_names, backend_status, load_backend, load_task, task_names
from ._report import make_report, print_report
from ._signals import Terminated, signals_end_the_run
from ._validate import describe


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="runners")
def main() -> None:
    """Run the same workloads on interchangeable parallel back-ends, and measure them."""


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def list_command(as_json: bool) -> None:
    """Back-ends (available or how to install them) and tasks with their parameters."""
    with _errors("list"):
        backends = []
        for name in backend_names():
            ok, note = backend_status(name)
            caps = _capabilities(load_backend(name)) if ok else []
            backends.append({"name": name, "available": ok, "note": note, "capabilities": caps})
        tasks = [_task_info(name) for name in task_names()]
    if as_json:
        click.echo(json.dumps({"backends": backends, "tasks": tasks}, indent=2))
        return
    click.echo("back-ends:")
    for b in backends:
        state = "available" if b["available"] else "missing"
        detail = ", ".join(b["capabilities"]) if b["available"] else b["note"]
        click.echo(f"  {b['name']:<16} {state:<10} {detail}")
    click.echo("\ntasks:")
    for t in tasks:
        click.echo(f"  {t['name']:<16} {t['description']}")
        for p in t["params"]:
            setting = f"{p['name']} = {p['default']!r}"
            click.echo(f"      {setting:<30} {p['type']}: {p['help']}")


@main.command("exec")
@click.argument("task", required=False)
@click.option("-b", "--backend", help="back-end name (see `runners list`); default: the config's, or serial")
@click.option("-w", "--workers", type=int, help="worker count; default: the CPUs this process may use")
@click.option("--chunksize", type=int, help="items per batch; default: automatic")
@click.option("--seed", type=int, help="root seed of the per-item random streams")
@click.option("-c", "--config", "config", type=click.Path(dir_okay=False), help="YAML job file")
@click.option("-s", "--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="a task parameter (samples=1e6) or back-end option (backend.start_method=spawn)")
@click.option("--retries", type=int, help="times a batch whose worker was lost is rerun (default 2)")
@click.option("--retry-on", multiple=True, metavar="EXCEPTION",
              help="retry items that raise this exception type too (repeatable; ItemTimeout: "
                   "items that ran out of time)")
@click.option("--timeout", type=float, help="seconds one item may run before its worker is stopped")
@click.option("--run-timeout", type=float,
              help="seconds the whole run's items may take; then pending work is cancelled, workers stopped")
@click.option("--keep-going/--fail-fast", default=None,
              help="run every item and report all failures at the end / stop at the first (the default)")
@click.option("--json", "as_json", is_flag=True,
              help="print one JSON object, also when the run fails ('error', and with --keep-going "
                   "'results' of the items that finished)")
def exec_command(task: str | None, backend: str | None, workers: int | None, chunksize: int | None,
                 seed: int | None, config: str | None, sets: tuple[str, ...], retries: int | None,
                 retry_on: tuple[str, ...], timeout: float | None, run_timeout: float | None,
                 keep_going: bool | None, as_json: bool) -> None:
    """Run TASK (a name, module:function or file.py) on one back-end and check its result."""
    job = None

    def failed(exc: BaseException) -> None:
        click.echo(json.dumps(failure_object(exc, job), default=repr))

    with _errors("exec", on_failure=failed if as_json else None), signals_end_the_run():
        job = job_from_sources(config, task=task, backend=backend, workers=workers,
                               chunksize=chunksize, seed=seed, sets=sets, retries=retries,
                               retry_on=retry_on or None, timeout=timeout, run_timeout=run_timeout,
                               fail_fast=None if keep_going is None else not keep_going)
        label = job.task if isinstance(job.task, str) else job.task.name
        with ProgressBar(label, ProgressBar.wanted(as_json)) as bar:
            record = run(job, progress=bar.advance, on_start=bar.start)
    for note in _retry_notes(record):  # what went wrong on the way, on stderr: stdout stays the result's
        click.echo(note, err=True)
    if as_json:
        click.echo(json.dumps(record.to_dict(), default=repr))
    else:
        _print_record(record)
    if record.check.ok is False:
        sys.exit(1)


@main.command("batch")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--out", type=click.Path(file_okay=False), help="output folder; default: results/NAME")
@click.option("--quick", is_flag=True, help="the small profile of each experiment (about a minute)")
@click.option("--fresh", is_flag=True, help="start over: drop the folder's earlier results and report")
@click.option("--dry-run", is_flag=True,
              help="print the number of cells and runs, and what sets each cell apart; run nothing")
@click.option("--no-report", is_flag=True, help="do not build the report at the end")
def batch_command(config: str, out: str | None, quick: bool, fresh: bool, dry_run: bool,
                  no_report: bool) -> None:
    """Run the matrix of a batch file (resuming what a previous run left), then report."""
    resume = "the finished runs are kept; run the same command again to resume"
    with _errors("batch", resume), signals_end_the_run():
        outcome = run_matrix(config, out=out, quick=quick, dry_run=dry_run, fresh=fresh, echo=click.echo)
    if dry_run:
        return
    for note in outcome.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"{outcome.ran} run(s) done, {outcome.already} kept from before; results in {outcome.out}")
    if not no_report:
        _report(str(outcome.out))
    if outcome.failed:
        click.echo(f"{outcome.failed} group(s) of cells failed (see the notes above); the other runs are "
                   "kept: run the same command again to retry the failed ones", err=True)
        sys.exit(1)


@main.command("report")
@click.argument("out_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--no-plots", is_flag=True, help="skip the PNG plots")
def report_command(out_dir: str, no_plots: bool) -> None:
    """Tables, report.md, report.csv, report.html and PNG plots from a batch's output folder."""
    with _errors("report"):
        if not read_results(f"{out_dir}/results.jsonl"):
            raise click.ClickException(f"{out_dir}: no results.jsonl records; run `runners batch` first")
    _report(out_dir, not no_plots)


def _report(out_dir: str, plots: bool = True) -> None:
    with _errors("report"):
        report = make_report(out_dir, plots=plots)
    print_report(report, click.echo)
    click.echo(f"wrote {out_dir}/report.md, report.csv, report.html" + (" and plots/" if plots else ""))


def _print_record(record: RunRecord) -> None:
    params = ", ".join(f"{k}={short_repr(v, 40)}" for k, v in record.params.items())
    t = record.timings
    click.echo(f"task     {record.task} ({params})")
    click.echo(f"backend  {record.backend}, {record.workers} worker(s), {record.items} items in "
               f"{record.batches} batches, on {_placement(record)}")
    click.echo(f"result   {short_repr(record.result, 200)}")
    click.echo(f"check    {record.check}")
    auto = record.extra.get("auto")
    if auto:  # the auto back-end's decision, and what it was based on
        click.echo(f"auto     chose {auto['choice']}: {auto['reason']}")
    click.echo(f"time     {t.total:.3f} s = start-up {t.startup:.3f} + compute {t.compute:.3f} "
               f"+ shut-down {t.shutdown:.3f}")


def _retry_notes(record: RunRecord) -> list[str]:
    """One line per kind of failure the run got past by retrying, e.g. '1 worker lost, its batch retried'."""
    notes = []
    for kind, batches in sorted(record.retried.items()):
        if kind == "WorkerLost":
            workers = "1 worker" if record.lost_workers == 1 else f"{record.lost_workers} workers"
            lost = "its batch" if batches == 1 and record.lost_workers == 1 else f"{batches} batches"
            notes.append(f"{workers} lost, {lost} retried")
        elif kind == "ItemTimeout":
            notes.append(f"{batches} item(s) ran past their timeout, retried")
        else:
            notes.append(f"{batches} batch(es) failed with {kind} and were retried")
    return notes


def _placement(record: RunRecord) -> str:
    nodes = record.to_dict()["nodes"]
    processes = record.to_dict()["processes"]
    return f"{processes} process(es) on " + ", ".join(f"{n} ({c} items)" for n, c in nodes.items())


class _ConfigProblem(click.ClickException):
    """Bad input: one line, exit 2 (click's UsageError would add the usage and a help hint)."""

    exit_code = 2


class _errors:
    """Turn the library's errors into click's: bad input exits 2, failures exit 1, each with one line
    (a task's error shows the traceback of the task's code first). `on_failure(exc)` is called
    before, for any of them, interrupts included."""

    def __init__(self, command: str, after_interrupt: str = "pending work cancelled, workers stopped",
                 on_failure: Callable[[BaseException], None] | None = None) -> None:
        self.command = command
        self.after_interrupt = after_interrupt
        self.on_failure = on_failure

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> bool:
        known = (RunnersError, KeyboardInterrupt, Terminated)
        if isinstance(exc, known) and self.on_failure is not None:
            self.on_failure(exc)
        if isinstance(exc, ConfigError):
            raise _ConfigProblem(str(exc)) from None
        if isinstance(exc, TaskError):
            header = (f"the traceback in the task's {exc.step}" if isinstance(exc, TaskStepError)
                      else "the worker's traceback")
            click.echo(f"{header}:\n{exc.remote_traceback.rstrip()}", err=True)
            raise click.ClickException(str(exc)) from None
        if isinstance(exc, RunnersError):
            raise click.ClickException(str(exc)) from None
        if isinstance(exc, KeyboardInterrupt):
            click.echo(f"interrupted: {self.after_interrupt}", err=True)
            sys.exit(130)
        if isinstance(exc, Terminated):
            click.echo(f"terminated: {self.after_interrupt}", err=True)
            sys.exit(143)
        return False


def failure_object(exc: BaseException, job: Job | None) -> dict[str, Any]:
    """What `runners exec --json` prints when the run fails: the job, the error and the items it
    concerns, and with --keep-going the values of the items that did finish (by index)."""
    out: dict[str, Any] = {}
    if job is not None:
        out.update(task=job.task if isinstance(job.task, str) else job.task.name, backend=job.backend,
                   params=dict(job.params), options=dict(job.options), workers=job.workers)
    out["error"] = _error_object(exc)
    if isinstance(exc, FailedItems):
        out["error"]["errors"] = [_error_object(e) for e in exc.errors]
        out["results"] = {str(index): value for index, value in exc.results.items()}
    return out


def _error_object(exc: BaseException) -> dict[str, Any]:
    items: list[int] = []
    if isinstance(exc, TaskError) and not isinstance(exc, TaskStepError):
        items = [exc.index]
    elif isinstance(exc, ItemTimeout):
        items = [exc.index]
    elif isinstance(exc, WorkerLost):
        items = list(exc.items)
    elif isinstance(exc, FailedItems):
        items = [index for skipped in sorted(exc.unfinished, key=lambda r: r.start) for index in skipped]
    message = str(exc) or {KeyboardInterrupt: "interrupted", Terminated: "terminated"}.get(type(exc), "")
    return {"type": type(exc).__name__, "message": message, "items": items}


def _capabilities(backend: type) -> list[str]:
    names = ["separate_processes", "distributed", "shares_memory", "runs_coroutines"]
    return [n.replace("_", " ") for n in names if getattr(backend, n, False)]


def _task_info(name: str) -> dict[str, Any]:
    task = load_task(name)
    hints = typing.get_type_hints(task.params)
    params = []
    for f in dataclasses.fields(task.params):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        params.append({"name": f.name, "default": default, "type": describe(hints[f.name]),
                       "help": f.metadata.get("help", "")})
    return {"name": name, "description": task.description, "params": params}
