"""Matrix builds over real data: Redis profiles, the Parquet event log, snapshots, the CLI."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest

from dmp.cli import cli
from dmp.matrix import builds, snapshots
from dmp.people import lifecycle
from dmp.people.identity import Identifier, IdKind
from dmp.people.profiles import find_person
from dmp.records import Stage
from dmp.storage import keyspace
from segments.scoring import DAY_MS
from tests.factories import NOW, bearer, make_hit, make_identify, run_synth, send_hits

AS_OF = "2026-09-21T12:00:00Z"  # NOW is 2026-09-21T14:13:20Z: events after it do not count
MODEL = """
fit:
  - {name: marketer, when: {trait: job_title, matches: "(?i)marketing"}, points: 30}
activity:
  half_life_days: 30
  rules:
    - {name: download, when: {event: whitepaper_download}, points: 40}
    - {name: pricing, when: {event: page, url_contains: /pricing}, points: 10, max_per_day: 1}
stages:
  mql: {score_gte: 60, tier_gte: medium}
  recycle_after_days: 90
"""
CATALOG = """
- {id: crm-guide, title: CRM guide, url: "https://acme.de/crm-guide", topics: [crm], stage: mql}
"""


@pytest.fixture
def anna(redis, drain, runner, tmp_path):
    """A marketer who browsed pricing and downloaded a whitepaper, with the model applied."""
    day = DAY_MS
    send_hits(
        redis,
        make_hit(
            uid="c-anna", timestamp=NOW - 3 * day, url="https://acme.de/pricing", topics=["crm"]
        ),
        make_hit(uid="c-anna", timestamp=NOW - 3 * day + 60_000, url="https://acme.de/pricing"),
        make_identify("anna@acme.de", uid="c-anna", job_title="Head of Marketing", company="Acme"),
        make_hit(uid="c-anna", type="track", event="whitepaper_download", timestamp=NOW - 4 * day),
        make_hit(uid="c-bob", timestamp=NOW - 2 * day, topics=["seo"]),
    )
    drain()
    (tmp_path / "model.yaml").write_text(MODEL)
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    assert runner.invoke(cli, ["scoring", "apply", str(tmp_path / "model.yaml")]).exit_code == 0
    assert runner.invoke(cli, ["content", "apply", str(tmp_path / "catalog.yaml")]).exit_code == 0
    return find_person(redis, Identifier(IdKind.EMAIL, "anna@acme.de"))


def test_build_scores_explains_and_records_the_mql(anna, runner, redis, config):
    """A build joins profile and events; the model's MQL is recorded in Redis after it."""
    result = runner.invoke(cli, ["matrix", "build", "--as-of", AS_OF, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    assert summary["persons"] == 2 and summary["stage_changes"] == 1
    frame = pl.read_parquet(summary["snapshot"])
    row = frame.filter(pl.col("person_id") == anna).row(0, named=True)
    assert row["tier"] == "medium" and row["job_title"] == "Head of Marketing"
    as_of = snapshots.latest_snapshot(config)
    assert as_of is not None and str(as_of) == summary["snapshot"]
    ms = NOW - 3 * DAY_MS  # the first pricing view counts, the second not (max_per_day)
    assert {p["rule"] for p in row["score_breakdown"]} == {"marketer", "download", "pricing"}
    assert row["touchpoints_total"] == 3  # the identify at NOW is after the as-of time
    assert row["stage"] == "mql" and row["next_content"] == "crm-guide"
    assert row["first_seen"] == NOW - 4 * DAY_MS and ms > row["first_seen"]
    assert row["channels"] == ["retargeting"]
    records = lifecycle.parse_records(redis.lrange(f"dmp:person:{{{anna}}}:stages", 0, -1))
    assert [(r["stage"], r["source"]) for r in records] == [("mql", "model")]


def test_sales_stage_stands_and_show_explains(anna, runner, redis):
    """A stage sales recorded wins over the model; `matrix show` explains score and timeline."""
    lifecycle.record_stage(redis, anna, Stage.SAL, source="api", by="test", at_ms=NOW - DAY_MS)
    assert runner.invoke(cli, ["matrix", "build", "--as-of", AS_OF]).exit_code == 0
    shown = runner.invoke(cli, ["matrix", "show", anna])
    assert shown.exit_code == 0, shown.output
    assert "stage sal" in shown.output and "marketer" in shown.output
    assert "sal 2026-09-20 14:13 by api (test)" in shown.output
    assert "whitepaper_download" in shown.output and "https://acme.de/pricing" in shown.output
    data = json.loads(runner.invoke(cli, ["matrix", "show", anna, "--json"]).output)
    assert data["row"]["stage"] == "sal" and len(data["timeline"]) == 4


def test_export_parquet_and_csv(anna, runner, tmp_path):
    """Export writes the latest snapshot with its moments as timestamps (ISO 8601 in CSV);
    CSV spells nested columns as JSON."""
    assert runner.invoke(cli, ["matrix", "build", "--as-of", AS_OF]).exit_code == 0
    out = tmp_path / "m.parquet"
    assert runner.invoke(cli, ["matrix", "export", "-o", str(out)]).exit_code == 0
    exported = pl.read_parquet(out)
    assert exported.height == 2
    for name in ("stage_since", "first_seen", "last_seen"):  # timestamps, not numbers
        dtype = exported.schema[name]
        assert isinstance(dtype, pl.Datetime) and dtype.time_zone == "UTC", name
    csv = tmp_path / "m.csv"
    assert runner.invoke(cli, ["matrix", "export", "-o", str(csv)]).exit_code == 0
    frame = pl.read_csv(csv, infer_schema=False)
    row = frame.filter(pl.col("person_id") == anna).row(0, named=True)
    assert json.loads(row["channels"]) == ["retargeting"]
    for name in ("stage_since", "first_seen", "last_seen"):  # ISO 8601, in UTC
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", row[name]), row[name]


def test_merged_persons_touchpoints_follow_them(redis, drain, runner, config):
    """Events stored under a person later merged count for the person they were merged into."""
    send_hits(redis, make_identify("eva@acme.de", uid="c-1"))
    drain()
    send_hits(
        redis,
        make_hit(uid="c-2", timestamp=NOW - DAY_MS),
        make_hit(uid="c-2", timestamp=NOW - DAY_MS + 1),
    )
    drain()
    send_hits(redis, make_identify("eva@acme.de", uid="c-2"))  # c-2's person merges into eva
    drain()
    result = builds.build(redis, config, NOW + 1)
    frame = pl.read_parquet(result.path)
    assert frame.height == 1 and frame["touchpoints_total"].item() == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["matrix", "build", "--as-of", "yesterday"], "--as-of: 'yesterday' is not an ISO time"),
        (["matrix", "show", "0123456789abcdef"], "no matrix yet"),
        (["matrix", "export", "-o", "x.parquet"], "no matrix yet"),
        (["scoring", "apply", "missing.yaml"], "cannot read missing.yaml"),
    ],
)
def test_bad_input_exits_2_with_one_line(redis, config, args, message, capsys):
    """Bad arguments end with exit code 2 and one clear line."""
    from dmp.cli import main

    with pytest.raises(SystemExit) as ended:
        main(["--data-dir", str(config.data_dir), *args])
    err = capsys.readouterr().err.strip()
    assert ended.value.code == 2 and message in err and len(err.splitlines()) == 1


def test_a_bad_model_is_refused_with_its_path(redis, config, tmp_path, capsys):
    """A scoring model with a mistake is not applied; the error names file and path."""
    from dmp.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("activity: {rules: [{when: {evnt: page}, points: 1}]}")
    with pytest.raises(SystemExit) as ended:
        main(["--data-dir", str(config.data_dir), "scoring", "apply", str(bad)])
    err = capsys.readouterr().err
    assert ended.value.code == 2 and "activity.rules[0].when.evnt: unknown key" in err
    assert redis.get(keyspace.SCORING_MODEL) is None


def test_admin_api_shows_the_matrix_row(anna, runner, client, admin_key):
    """After a build the person's API view carries their matrix row and score breakdown."""
    assert runner.invoke(cli, ["matrix", "build", "--as-of", AS_OF]).exit_code == 0
    body = client.get(f"/api/v1/persons/{anna}", headers=bearer(admin_key)).get_json()
    assert body["matrix"]["stage"] == "mql" and body["matrix"]["score"] > 60
    assert body["matrix"]["score_breakdown"][0]["rule"] == "download"
    assert [s["stage"] for s in body["stages"]] == ["mql"]


def test_funnel_cli_and_api_match_the_build(anna, runner, client, admin_key):
    """`dmp funnel --json` and GET /api/v1/funnel show the latest build's funnel."""
    auth = bearer(admin_key)
    assert client.get("/api/v1/funnel", headers=auth).status_code == 404
    assert runner.invoke(cli, ["matrix", "build", "--as-of", AS_OF]).exit_code == 0
    data = json.loads(runner.invoke(cli, ["funnel", "--json"]).output)
    assert data == client.get("/api/v1/funnel", headers=auth).get_json()
    assert data["persons"] == 2 and sum(s["persons"] for s in data["stages"]) == 2
    text = runner.invoke(cli, ["funnel"]).output
    assert "involvement pyramid" in text and "lead → mql" in text


def test_only_the_newest_snapshots_are_kept(runner, redis, config):
    """Frequent builds (the worker's schedule) keep the newest five snapshots, whole."""
    run_synth(runner, 30, 5)
    built = [builds.build(redis, config, incremental=True).path for _ in range(6)]
    built.append(builds.build(redis, config, 1_700_000_000_000).path)  # as of 2023
    folder = snapshots.matrix_dir(config)
    kept = sorted(folder.glob("matrix-*Z-*[0-9].parquet"))
    assert kept == sorted(built[-5:]) and snapshots.latest_snapshot(config) == built[-1]
    for path in built[:2]:  # gone, but a state part a kept snapshot still reads
        left = {p.name for p in folder.glob(path.stem + ".*")}
        assert left <= {path.with_suffix(".state.parquet").name}
    assert folder.joinpath(built[0].with_suffix(".state.parquet").name).exists()
    read: set[str] = set()
    for path in built[-5:]:
        parts = snapshots.state_parts(json.loads(snapshots.manifest_path(path).read_text()))
        assert all((folder / part).exists() for part in parts)
        read |= set(parts)
    assert {p.name for p in folder.glob("*.state.parquet")} == read
    for _ in range(5):  # full builds: each its own state, the old parts then unread
        builds.build(redis, config)
    kept = sorted(folder.glob("matrix-*Z-*[0-9].parquet"))
    assert {p.name for p in folder.glob("*.state.parquet")} == {
        p.with_suffix(".state.parquet").name for p in kept
    }
