"""`dmp status`: refused hits of the last hour by reason, and warnings when no server or
no ingest worker runs for the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from dmp.cli import cli
from dmp.storage import keyspace, metrics
from dmp.storage.recenthits import queue_counts
from tests.factories import make_hit, send_hits


def _refuse(redis, fields: dict[str, int]) -> None:
    with redis.pipeline(transaction=False) as pipe:
        queue_counts(pipe.execute_command, fields)
        pipe.execute()


def test_status_shows_refused_hits_of_the_last_hour_by_reason(runner, redis):
    """The text lists each reason with its count and collectors; --json has them by
    reason and by collector."""
    _refuse(redis, {"tag:origin_not_allowed": 12, "pixel:unknown_key": 2, "api:bot": 1})
    _refuse(redis, {"pixel:origin_not_allowed": 3})
    text = runner.invoke(cli, ["status"]).stdout
    block = text[text.index("refused or set aside in the last hour") :].splitlines()
    assert [line.split() for line in block[1:]] == [
        ["bot", "1", "(api", "1)"],
        ["origin_not_allowed", "15", "(pixel", "3,", "tag", "12)"],
        ["unknown_key", "2", "(pixel", "2)"],
    ]
    state = json.loads(runner.invoke(cli, ["status", "--json"]).stdout)
    assert state["refused_last_hour"] == {
        "by_reason": {"bot": 1, "origin_not_allowed": 15, "unknown_key": 2},
        "by_collector": {
            "api": {"bot": 1},
            "pixel": {"origin_not_allowed": 3, "unknown_key": 2},
            "tag": {"origin_not_allowed": 12},
        },
    }


def test_status_says_nothing_of_refusals_when_there_were_none(runner, redis):
    """No refused hits: no block (an old total in /metrics does not count)."""
    redis.hset(keyspace.METRICS, metrics.hits_counter("tag", "origin_not_allowed"), 40)
    result = runner.invoke(cli, ["status"])
    assert result.exit_code == 0 and "events stored" in result.stdout
    assert "refused" not in result.output


def test_status_warns_when_no_ingest_worker_runs(runner, redis):
    """Without a worker's lease the text warns on stderr that pending hits wait; --json
    says it in worker_running instead; with the lease held, no warning."""
    send_hits(redis, make_hit(uid="c1"))
    alone = runner.invoke(cli, ["status"])
    assert alone.exit_code == 0
    assert "no ingest worker runs for this store" in alone.stderr and "(now 1)" in alone.stderr
    as_json = runner.invoke(cli, ["status", "--json"])
    assert as_json.stderr == "" and json.loads(as_json.stdout)["worker_running"] is False
    redis.set(keyspace.partition(0).lease, "serve/1/x", ex=30)
    served = runner.invoke(cli, ["status"])
    assert served.exit_code == 0 and served.stderr == ""
    assert json.loads(runner.invoke(cli, ["status", "--json"]).stdout)["worker_running"] is True


def test_status_in_a_dir_without_a_server_warns_each_time(tmp_path):
    """Run as a user runs it, in a dir no `dmp serve` serves, `dmp status` says on stderr
    which data dir it uses and that no server runs there, every time (each run stops the
    embedded Redis it started), and still prints the status."""
    data_dir = tmp_path / "dmp-data"
    env = {**os.environ, "DMP_DATA_DIR": str(data_dir), "DMP_REDIS_URL": ""}
    for new in (", a new and empty one", ":"):
        done = subprocess.run(
            [sys.executable, "-m", "dmp", "status"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert f"no dmp server runs for the data dir {data_dir}{new}" in done.stderr
        assert "no ingest worker runs" in done.stderr and "events stored" in done.stdout
