"""Configuration on a real three-master Redis Cluster: sites, keys, users, segments and a
destination with its sync, through the CLI, as an operator sets up an installation."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dmp.cli import cli

SEGMENT = "id: active\nname: Active\nwhere: {did: {event: page, within_days: 30}}\n"


@pytest.fixture
def operator(cluster, redis_cluster, tmp_path) -> CliRunner:
    """Return a CLI runner on the flushed cluster and a fresh data dir."""
    env = {"DMP_REDIS_URL": redis_cluster.url, "DMP_DATA_DIR": str(tmp_path / "data")}
    return CliRunner(env=env)


def _ok(runner: CliRunner, *args: str, stdin: str | None = None) -> str:
    result = runner.invoke(cli, list(args), input=stdin)
    assert result.exit_code == 0, (args, result.output, result.exception)
    return result.output


def test_an_installation_is_set_up_and_taken_down_on_a_cluster(operator, tmp_path):
    """Adding and removing a site, keys, a user, a segment and a file destination, and a
    sync of it, work on a cluster (their transactions are on the {dmp} slot)."""
    _ok(operator, "sites", "add", "Acme GmbH", "--domain", "acme.de")
    _ok(operator, "sites", "domains", "acme-gmbh", "--add", "acme.com")
    server = _ok(operator, "keys", "create", "--scope", "server", "--site", "acme-gmbh")
    _ok(operator, "keys", "create", "--scope", "admin", "--name", "ops")
    _ok(operator, "users", "add", "ops@acme.de", "--password-stdin", stdin="s3cret-Passw0rd\n")
    path = tmp_path / "active.yaml"
    path.write_text(SEGMENT)
    _ok(operator, "segments", "apply", str(path))
    _ok(operator, "segments", "run")
    folder = tmp_path / "out"
    _ok(operator, "destinations", "add", "file", "--name", "drop", "--segments", "active",
        "--option", f"folder={folder}")  # fmt: skip
    assert "export drop/active: ok" in _ok(operator, "export", "run", "drop")
    assert json.loads(_ok(operator, "export", "status", "--json"))["drop"]
    _ok(operator, "destinations", "remove", "drop")
    _ok(operator, "segments", "delete", "active")
    _ok(operator, "users", "remove", "ops@acme.de")
    key_id = json.loads(_ok(operator, "keys", "list", "--json"))[0]["id"]
    _ok(operator, "keys", "revoke", key_id)
    _ok(operator, "sites", "remove", "acme-gmbh")
    assert json.loads(_ok(operator, "sites", "list", "--json")) == []
    assert server.strip()
