"""The ``dmp`` command line: the group, and every command added to it in one place."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from dmp import logs
from dmp.cli import (
    access,
    compaction,
    destinations,
    matrix,
    persons,
    segments,
    serving,
    sources,
    synth,
    users,
)
from dmp.cli.context import Context, error_line, fail
from dmp.config import check_engine, load_config

DATA_UMASK = 0o077  # folders 0700, files 0600


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="DMP_DATA_DIR",
    default="dmp-data",
    show_default=True,
    help="Where the event log and the embedded Redis server live.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
@click.pass_context
def cli(ctx: click.Context, data_dir: Path, verbose: bool) -> None:
    """dmp: an audience data platform for B2B lead nurturing."""
    chatty = ctx.invoked_subcommand in ("serve", "worker")  # long-running: say what happens
    logs.setup(logging.DEBUG if verbose else logging.INFO if chatty else logging.WARNING)
    try:
        ctx.obj = Context(load_config({"data_dir": data_dir}))
        check_engine(ctx.obj.config)  # builds and runs would meet it later, half done
    except ValueError as exc:
        fail(f"bad setting: {exc}")


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; bad input exits 2 with one line on stderr."""
    # The data folder holds personal data: every folder dmp (or its Redis, its gunicorn
    # workers, its worker process) makes is 0700 and every file 0600, whatever the shell's
    # umask. Set here, where every dmp process starts, not in create_app (a library call).
    os.umask(DATA_UMASK)
    try:
        cli.main(args=argv, prog_name="dmp", standalone_mode=False)
    except click.UsageError as exc:
        click.echo(f"dmp: error: {error_line(exc.format_message())}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"dmp: error: {error_line(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("dmp: aborted", err=True)
        sys.exit(1)


COMMANDS: tuple[click.Command, ...] = (
    serving.serve,
    serving.worker_cmd,
    serving.lookups_cmd,
    serving.status,
    access.sites_group,
    access.keys_group,
    users.users_group,
    persons.persons_group,
    persons.forget_cmd,
    sources.import_group,
    matrix.scoring_group,
    matrix.content_group,
    matrix.matrix_group,
    matrix.funnel,
    segments.segments_group,
    destinations.destinations_group,
    destinations.export_group,
    synth.synth_cmd,
    compaction.compact_cmd,
)
for command in COMMANDS:
    cli.add_command(command)
