"""The ``dmp`` command line."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click
import redis

from dmp.config import Config, load_config


class Context:
    """What every command shares: the config and, on first use, one Redis client."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._redis: redis.Redis | None = None

    @property
    def redis(self) -> redis.Redis:
        """Return the Redis client (connecting, or starting the embedded server, once)."""
        if self._redis is None:
            from dmp.app import connect_config

            client = connect_config(self.config)
            try:
                client.ping()
            except redis.RedisError as exc:
                raise click.ClickException(f"cannot reach Redis: {exc}") from None
            self._redis = client
        return self._redis


pass_ctx = click.make_pass_decorator(Context)
MAX_ERROR = 280  # characters of an error line after "dmp: error: "


def _fail(message: str) -> None:
    """Stop with exit code 2 and one line on stderr (bad input)."""
    raise click.UsageError(message)


def error_line(message: str, limit: int = MAX_ERROR) -> str:
    """Return an error message as one short printable line (input it quotes is cut)."""
    words = " ".join(message[: limit * 2].split())  # newlines and tabs become spaces
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in words)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def bar(count: int, total: int, width: int = 40) -> str:
    """Return a text bar of ``count`` out of ``total`` (charts in the terminal)."""
    return "█" * round(width * count / total) if count and total else ""


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


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
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO if chatty else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        ctx.obj = Context(load_config({"data_dir": data_dir}))
    except ValueError as exc:
        _fail(f"bad setting: {exc}")


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; bad input exits 2 with one line on stderr."""
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


from dmp.cli import (
    collect,
    matrix,
    segments,  # noqa: E402,F401  (their commands join the group)
    sources,
    synth,
)
