"""What every ``dmp`` command shares: the context with its Redis client, and output helpers."""

from __future__ import annotations

import json
from typing import Any

import click
import redis

from dmp.config import Config
from dmp.storage import keymigration
from dmp.storage.redisserver import answers, connect_config, locate_server


class Context:
    """What every command shares: the config and, on first use, one Redis client."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._redis: redis.Redis | None = None

    @property
    def redis(self) -> redis.Redis:
        """Return the Redis client (connecting, or starting the embedded server, once)."""
        if self._redis is None:
            self.say_where()
            client = connect_config(self.config)
            try:
                client.ping()
                keymigration.ensure_current(client)
            except redis.RedisError as exc:
                raise click.ClickException(f"cannot reach Redis: {exc}") from None
            except keymigration.KeyspaceError as exc:
                raise click.ClickException(str(exc)) from None
            self._redis = client
        return self._redis

    def say_where(self) -> None:
        """Say on stderr which data dir a command uses when no server runs for it (the
        command starts the dir's embedded Redis; in a new dir, an empty store)."""
        if self.config.redis_url:
            return
        server = locate_server(self.config.data_dir)
        if answers(server):
            return
        new = "" if server.directory.exists() else ", a new and empty one"
        click.echo(
            f"dmp: no dmp server runs for the data dir {self.config.data_dir.resolve()}{new}: "
            "this command starts its embedded Redis (`dmp serve` there keeps one running; "
            "--data-dir or DMP_DATA_DIR picks another dir, DMP_REDIS_URL another server)",
            err=True,
        )


pass_ctx = click.make_pass_decorator(Context)
MAX_ERROR = 280  # characters of an error line after "dmp: error: "


def fail(message: str) -> None:
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


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON (the ``--json`` of read commands)."""
    click.echo(json.dumps(data, indent=2, sort_keys=True))
