"""The dmp command line: sites, keys, status and worker; bad input exits 2 with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import redis as redis_lib
from click.testing import CliRunner

from dmp.access import sites
from dmp.access.apikeys import Scope, check_key
from dmp.cli import cli
from dmp.ingest import spool
from dmp.storage import keyspace, redisserver
from tests.factories import make_hit, send_hits


def test_sites_add_prints_the_write_key_last(runner, redis):
    """`sites add` stores the site and prints its write key on the last line."""
    result = runner.invoke(cli, ["sites", "add", "Acme GmbH", "--domain", "https://www.Acme.de/"])
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    site = sites.SiteCache(redis, 0).site_for_key(key)
    assert site is not None and site.domains == ("www.acme.de",)
    stored = redis.hgetall(keyspace.site("acme-gmbh"))
    assert stored["write_key"] != key  # looked up by its digest
    # Public (every page with the tag shows it): kept readable for the UI's snippets.
    assert stored["public_write_key"] == key


def test_sites_list_json_and_remove(runner, redis, site):
    """`sites list --json` lists sites; `sites remove` deletes one and its key."""
    listed = json.loads(runner.invoke(cli, ["sites", "list", "--json"]).output)
    assert [s["site_id"] for s in listed] == ["acme-gmbh"]
    assert runner.invoke(cli, ["sites", "remove", "acme-gmbh"]).exit_code == 0
    assert sites.SiteCache(redis, 0).site_for_key(site[1]) is None


def test_sites_snippet_prints_the_tag_and_pixel_without_a_grant(runner, site):
    """`sites snippet` prints the site's tag and pixel with its write key and dmp's URL, and
    grants no consent by itself; an unknown site or a bad URL exits 2 saying so."""
    result = runner.invoke(cli, ["sites", "snippet", "acme-gmbh", "--url", "https://t.acme.de"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert f'<script async src="https://t.acme.de/dmp.js" data-key="{site[1]}"></script>' in text
    assert f"https://t.acme.de/p.gif?k={site[1]}&" in text
    assert "consent=analytics" not in text and "consent=ads" not in text
    assert "__tcfapi" in text and "gdpr_consent" in text  # the pixel asks the page's CMP
    assert "GDPR_CONSENT" not in text  # no ad pixel: dmp's operator is no TCF vendor here
    shown = runner.invoke(cli, ["sites", "snippet", "acme-gmbh", "--json"])
    assert [s["name"] for s in json.loads(shown.output)] == ["tag", "pixel"]
    for argv, said in (
        (["sites", "snippet", "nope"], "no site 'nope'"),
        (["sites", "snippet", "acme-gmbh", "--url", "x"], "is not an http(s) address"),
    ):
        bad = runner.invoke(cli, argv)
        assert bad.exit_code == 2 and said in bad.stderr, argv


def test_sites_and_keys_lists_have_a_header_row(runner, redis, site):
    """`sites list` and `keys list` start with a header naming their columns, and say so
    when there is nothing to list."""
    lines = runner.invoke(cli, ["sites", "list"]).output.splitlines()
    assert lines[0].split() == ["SITE", "DOMAINS", "CREATED", "KEEPS"]
    assert lines[1].split()[:2] == ["acme-gmbh", "acme.de,localhost"]
    assert runner.invoke(cli, ["keys", "list"]).output.startswith("no keys")
    runner.invoke(cli, ["keys", "create", "--scope", "server", "--site", "acme-gmbh"])
    lines = runner.invoke(cli, ["keys", "list"]).output.splitlines()
    assert lines[0].split() == ["ID", "SCOPE", "CREATED", "NAME", "FOR"]
    assert lines[1].split()[1] == "server" and lines[1].endswith("site acme-gmbh")


def _commands(group, path=()):
    """Yield (path, command) for every command under a click group."""
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))


def test_help_texts_are_plain_text(runner):
    """No `--help` shows reStructuredText markup (double backquotes, :func: roles)."""
    for path, _ in _commands(cli):
        text = runner.invoke(cli, [*path, "--help"]).output
        assert "``" not in text and ":func:" not in text and ":class:" not in text, path


def test_keys_create_list_revoke(runner, redis):
    """`keys create` prints a working admin key last; list shows its id; revoke ends it."""
    result = runner.invoke(cli, ["keys", "create", "--scope", "admin", "--name", "ops"])
    key = result.output.strip().splitlines()[-1]
    assert check_key(redis, key, Scope.ADMIN)
    listed = json.loads(runner.invoke(cli, ["keys", "list", "--json"]).output)
    assert listed[0]["name"] == "ops" and key not in json.dumps(listed)
    assert runner.invoke(cli, ["keys", "revoke", listed[0]["id"]]).exit_code == 0
    assert not check_key(redis, key, Scope.ADMIN)


def test_status_json_and_worker_once(runner, redis):
    """`worker --once` drains the stream; `status --json` prints the contract's fields."""
    send_hits(redis, make_hit(uid="c1"))
    before = json.loads(runner.invoke(cli, ["status", "--json"]).output)
    assert before == {
        "events_stored": 0,
        "events_aggregate": 0,
        "persons": {"low": 0, "medium": 0, "high": 0},
        "pending": 1,
        "spooled_bytes": 0,
        "segments": {"defined": 0, "last_run": None, "live_moves_since": 0},
        "worker_running": False,
        "refused_last_hour": {"by_reason": {}, "by_collector": {}},
        "partitions": [{"partition": 0, "pending": 1, "worker": None}],
    }
    result = runner.invoke(cli, ["worker", "--once"])
    assert result.exit_code == 0, result.output
    after = json.loads(runner.invoke(cli, ["status", "--json"]).output)
    assert after["events_stored"] == 1 and after["persons"]["low"] == 1 and after["pending"] == 0
    assert "events stored" in runner.invoke(cli, ["status"]).output


def test_status_shows_hits_spooled_while_redis_was_away(runner, config):
    """Hits a collector spooled (Redis away) show in `status` until they are replayed."""
    unreachable = redis_lib.Redis.from_url("redis://127.0.0.1:1/0")
    box = spool.Spool(spool.spool_dir(config.data_dir), unreachable, 10**6)
    assert box.append(['["spooled-1","acme-gmbh","pixel","page","page",1,1]'])
    state = json.loads(runner.invoke(cli, ["status", "--json"]).output)
    assert state["spooled_bytes"] > 0
    assert "spooled bytes" in runner.invoke(cli, ["status"]).output


def _dmp(config, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DMP_REDIS_URL": config.redis_url, "DMP_DATA_DIR": str(config.data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "dmp", *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "args",
    [
        ["sites", "add", "Acme", "--domain", "not a domain"],
        ["sites", "add", "Acme"],
        ["sites", "add", "!!!", "--domain", "acme.de"],
        ["sites", "remove", "nope"],
        ["keys", "create", "--scope", "root"],
        ["keys", "revoke", "xyz"],
        ["serve", "--port", "99999"],
        ["no-such-command"],
    ],
)
def test_bad_input_exits_2_with_one_line(config, redis, args):
    """Bad arguments exit with code 2 and a single clear line on stderr."""
    done = _dmp(config, *args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dmp: error: "), done.stderr


def test_duplicate_site_exits_2(config, redis, site):
    """Adding a site that exists already is refused."""
    done = _dmp(config, "sites", "add", "Acme GmbH", "--domain", "acme.de")
    assert done.returncode == 2 and "exists already" in done.stderr


def test_unreachable_redis_is_one_line(config):
    """A Redis URL nobody answers gives one line and a non-zero exit."""
    env = {**os.environ, "DMP_REDIS_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run(
        [sys.executable, "-m", "dmp", "status"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "cannot reach Redis" in done.stderr


@pytest.mark.parametrize("args", [[], ["serve"], ["worker"], ["sites", "add"], ["keys"]])
def test_help_explains_each_command(args):
    """--help works on every command and says what it does."""
    done = subprocess.run(
        [sys.executable, "-m", "dmp", *args, "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "Usage: dmp" in done.stdout


def test_a_command_in_a_dir_without_a_server_says_which_dir_it_uses(tmp_path):
    """Run where no server runs, a command says on stderr which data dir it uses and that
    it is new and empty; run again there while that server still runs, it says nothing."""
    data_dir = tmp_path / "somewhere" / "dmp-data"
    runner = CliRunner(env={"DMP_DATA_DIR": str(data_dir), "DMP_REDIS_URL": ""})
    first = runner.invoke(cli, ["status", "--json"])
    assert first.exit_code == 0, first.output
    assert f"no dmp server runs for the data dir {data_dir}, a new and empty one" in first.stderr
    assert json.loads(first.stdout)["events_stored"] == 0
    server = redisserver.locate_server(data_dir)
    try:
        assert redisserver.answers(server)  # the command's server, not stopped yet
        again = runner.invoke(cli, ["status", "--json"])
        assert again.exit_code == 0 and "no dmp server runs" not in again.stderr
    finally:
        redisserver.stop_if_last(server)


def test_serve_refuses_a_bad_tcf_rule_before_starting_anything(runner):
    """A TCF purpose rule that is not purpose numbers stops `dmp serve` with exit 2 and one
    line naming the settings, before any web process starts (each would refuse it)."""
    result = runner.invoke(cli, ["serve", "--port", "1"], env={"DMP_TCF_ADS": "1,x"})
    assert result.exit_code == 2
    [line] = [line for line in result.stderr.splitlines() if "DMP_TCF_ADS" in line]
    assert "'x' is no TCF purpose (1 to 11)" in line
