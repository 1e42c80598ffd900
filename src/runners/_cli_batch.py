"""The `batch` and `report` commands: parse, call the library, print."""

from __future__ import annotations

import sys

import click

from ._batch import read_results, run_batch_file
from ._errors import ConfigError, RunnersError
from ._report import make_report, print_report


@click.command("batch")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--out", type=click.Path(file_okay=False), help="output folder; default: results/NAME")
@click.option("--quick", is_flag=True, help="the small profile of each experiment (about a minute)")
@click.option("--dry-run", is_flag=True, help="list the cells and what is left to run; run nothing")
@click.option("--no-report", is_flag=True, help="do not build the report at the end")
def batch_command(config: str, out: str | None, quick: bool, dry_run: bool, no_report: bool) -> None:
    """Run the matrix of a batch file (resuming what a previous run left), then report."""
    try:
        outcome = run_batch_file(config, out=out, quick=quick, dry_run=dry_run, echo=click.echo)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except RunnersError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("interrupted: the finished runs are kept; run the same command again to resume",
                   err=True)
        sys.exit(130)
    if dry_run:
        return
    for note in outcome.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"{outcome.ran} run(s) done, {outcome.already} kept from before; results in "
               f"{outcome.out}")
    if not no_report:
        _report(str(outcome.out))


@click.command("report")
@click.argument("out_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--no-plots", is_flag=True, help="skip the PNG plots")
def report_command(out_dir: str, no_plots: bool) -> None:
    """Tables, report.md, report.csv and PNG plots from a batch's output folder."""
    if not read_results(f"{out_dir}/results.jsonl"):
        raise click.ClickException(f"{out_dir}: no results.jsonl records; run `runners batch` first")
    _report(out_dir, not no_plots)


def _report(out_dir: str, plots: bool = True) -> None:
    try:
        report = make_report(out_dir, plots=plots)
    except RunnersError as exc:
        raise click.ClickException(str(exc)) from None
    print_report(report, click.echo)
    click.echo(f"wrote {out_dir}/report.md, report.csv and plots")
