"""Incremental matrix builds give exactly the rows of a full build at the same time."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from dmp.cli import cli
from dmp.ingest.eventlog import event_row, rows_table
from dmp.matrix import builds, rescoring, snapshots, sources
from dmp.people import lifecycle
from dmp.people.identity import Identifier, IdKind
from dmp.people.profiles import find_person
from dmp.records import Stage
from dmp.storage import keyspace
from dmp.storage.parquetfiles import write_parquet_files
from segments.scoring import DAY_MS, default_model_text, parse_model
from tests.factories import NOW, make_hit, make_identify, run_synth, send_hits


def rows(path) -> pl.DataFrame:
    return pl.read_parquet(path).sort("person_id")


def test_incremental_equals_full_after_new_events_merges_and_stage_changes(
    runner, redis, drain, config
):
    """New events, a merge, a sales stage and the passing of time: incremental == full."""
    start = run_synth(runner, 120, 40, 9)
    first = builds.build(redis, config, start)
    some = pl.read_parquet(first.path).filter(pl.col("email").is_not_null())["person_id"]
    # Afterwards: a known person returns, a new cookie appears and identifies as an existing
    # person (a merge), sales moves someone on, and eleven days pass.
    later = start + 11 * DAY_MS
    email = pl.read_parquet(first.path).filter(pl.col("person_id") == some[0])["email"].item()
    send_hits(
        redis,
        make_hit(
            uid="c-new", timestamp=later - DAY_MS, url="https://acme.de/pricing", topics=["ki"]
        ),
        make_hit(uid="c-new", timestamp=later - DAY_MS + 5, type="track", event="demo_request"),
        make_identify(email, uid="c-new"),
    )
    drain()
    lifecycle.record_stage(redis, some[1], Stage.SQL, source="api", at_ms=later - 3 * DAY_MS)
    folder = snapshots.matrix_dir(config)
    backup = config.data_dir / "matrix-before"
    shutil.copytree(folder, backup)
    inc = builds.build(redis, config, later, incremental=True)
    manifest = json.loads(snapshots.manifest_path(inc.path).read_text())
    assert manifest["incremental"] and manifest["refolded"] < inc.persons
    incremental = rows(inc.path)
    # The full build at the same time, from the same starting point.
    shutil.rmtree(folder)
    shutil.copytree(backup, folder)
    full = builds.build(redis, config, later)
    assert_frame_equal(incremental, rows(full.path))
    merged = find_person(redis, Identifier(IdKind.UID, "c-new"))
    assert merged == some[0]
    row = rows(full.path).filter(pl.col("person_id") == merged).row(0, named=True)
    assert "demo_request" in {p["rule"] for p in row["score_breakdown"]} or row["score"] > 0


def test_falls_back_to_full_when_the_model_changes(runner, redis, config, tmp_path):
    """A changed scoring model refolds everyone."""
    run_synth(runner, 40, 20, 3)
    builds.build(redis, config, NOW)
    model = tmp_path / "m.yaml"
    model.write_text("activity: {half_life_days: 7, rules: [{when: {event: page}, points: 2}]}")
    assert runner.invoke(cli, ["scoring", "apply", str(model)]).exit_code == 0
    again = builds.build(redis, config, NOW + DAY_MS, incremental=True)
    assert not json.loads(snapshots.manifest_path(again.path).read_text())["incremental"]


def test_cli_incremental_flag(runner, redis, config):
    """`dmp matrix build --incremental` goes on from the last build."""
    run_synth(runner, 30, 10, 2)
    assert runner.invoke(cli, ["matrix", "build"]).exit_code == 0
    result = runner.invoke(cli, ["matrix", "build", "--incremental", "--json"])
    assert result.exit_code == 0, result.output
    path = json.loads(result.output[result.output.index("{") :])["snapshot"]
    assert json.loads(snapshots.manifest_path(Path(path)).read_text())["incremental"]


def test_a_withdrawal_reaches_the_next_incremental_build(redis, drain, config):
    """A browser withdrawing consent changes its person's consents and tier without an
    event row: the next incremental build shows it all the same, as a full build does."""
    send_hits(redis, make_hit(uid="c1"), make_hit(uid="c2", url="https://acme.de/pricing"))
    drain()
    builds.build(redis, config, NOW + 1000)
    withdrawal = make_hit(
        type="consent",
        event="consent_withdrawn",
        uid="c1",
        timestamp=NOW + 2000,
        consent={"analytics": False, "ads": False, "email": False},
    )
    send_hits(redis, withdrawal)
    drain()
    folder = snapshots.matrix_dir(config)
    backup = config.data_dir / "matrix-before"
    shutil.copytree(folder, backup)
    incremental = rows(builds.build(redis, config, NOW + DAY_MS, incremental=True).path)
    shutil.rmtree(folder)
    shutil.copytree(backup, folder)
    full = rows(builds.build(redis, config, NOW + DAY_MS).path)
    assert_frame_equal(incremental, full)
    withdrawn = full.filter(pl.col("tier") == "unknown")
    assert withdrawn.height == 1 and "retargeting" not in withdrawn["channels"][0]


def test_rows_made_another_way_are_not_refreshed(runner, redis, config, caplog):
    """A snapshot from before ROWS_VERSION, or whose rows do not match its state, is not
    refreshed: the next build is a full one, and says why."""
    run_synth(runner, 30, 10, 4)
    first = builds.build(redis, config, NOW)
    manifest_file = snapshots.manifest_path(first.path)
    manifest = json.loads(manifest_file.read_text())
    manifest_file.write_text(json.dumps({k: v for k, v in manifest.items() if k != "rows"}))
    again = builds.build(redis, config, NOW + DAY_MS, incremental=True)
    assert not json.loads(snapshots.manifest_path(again.path).read_text())["incremental"]
    # Rows without a column this code makes (written by hand, as an older layout).
    pl.read_parquet(again.path).drop("last_channel").write_parquet(again.path)
    with caplog.at_level("WARNING", logger="dmp.matrix.builds"):
        third = builds.build(redis, config, NOW + 2 * DAY_MS, incremental=True)
    assert not json.loads(snapshots.manifest_path(third.path).read_text())["incremental"]
    assert "cannot be refreshed (the rows are not this version's matrix rows)" in caplog.text
    assert third.persons == first.persons


@pytest.mark.parametrize(("many", "few"), [(0, 0), (10, 0), (0, 3), (50, 5), (40, 30), (200, 1)])
def test_merge_sorted_keeps_every_row_in_order(many, few):
    """Runs of the few rows falling into one gap, before the first and after the last."""
    rng = random.Random(many * 1000 + few)
    ids = rng.sample(range(10_000), many + few)
    schema = {"person_id": pl.Utf8, "x": pl.Int64}
    a = pl.DataFrame({"person_id": [f"p{i:05d}" for i in ids[:many]], "x": ids[:many]}, schema)
    b = pl.DataFrame({"person_id": [f"p{i:05d}" for i in ids[many:]], "x": ids[many:]}, schema)
    merged = builds.merge_sorted(a.sort("person_id"), b.sort("person_id"))
    assert_frame_equal(merged, pl.concat([a, b]).sort("person_id"))


def test_a_chain_of_incremental_builds_keeps_its_state_in_parts(runner, redis, drain, config):
    """Each incremental build writes only its refolded persons' state, the earlier parts
    kept; past MAX_STATE_PARTS the state is whole again. Rows after the chain, and a
    rescoring plan read from the parts, are a full build's at the same time."""
    start = run_synth(runner, 60, 20, 5)
    builds.build(redis, config, start)
    some = pl.read_parquet(snapshots.latest_snapshot(config))["person_id"].to_list()
    # person ids are random, so the first row's person may be known by email alone
    identifiers = (redis.smembers(keyspace.person(p, "identifiers")) for p in some)
    uid = next(i for ids in identifiers for i in ids if i.startswith("uid:")).split(":", 1)[1]
    counts = []
    for day in range(1, snapshots.MAX_STATE_PARTS + 2):
        at = start + day * DAY_MS
        send_hits(redis, make_hit(uid=uid, timestamp=at - 1000, url="https://acme.de/pricing"))
        drain()
        built = builds.build(redis, config, at, incremental=True)
        manifest = json.loads(snapshots.manifest_path(built.path).read_text())
        assert manifest["incremental"] and manifest["refolded"] < built.persons
        counts.append(len(snapshots.state_parts(manifest)))
        written = pl.read_parquet(built.path.with_suffix(".state.parquet")).height
        assert written == built.persons if counts[-1] == 1 else written < built.persons
    assert counts[: snapshots.MAX_STATE_PARTS - 1] == list(range(2, snapshots.MAX_STATE_PARTS + 1))
    assert counts[-2:] == [1, 2]  # written whole again, then a part on top
    chained = rows(built.path)
    model = parse_model(default_model_text().replace("points: 10", "points: 11"))
    plan = rescoring.plan_rescoring(redis, config, model)
    full = builds.build(redis, config, at)
    assert_frame_equal(chained, rows(full.path))
    again = rescoring.plan_rescoring(redis, config, model)
    assert (plan.bands, plan.stages) == (again.bands, again.stages)


def test_the_persons_of_events_after_the_last_builds_time_are_refolded(tmp_path):
    """Stored before the last build but timed after it (a build of a past time): touched;
    stored in a file the last build did not read: touched, whenever it was timed."""
    times = [NOW - DAY_MS, NOW - 1, NOW, NOW + 1, NOW + DAY_MS]
    rows = [event_row(make_hit(timestamp=t), f"{i:016x}") for i, t in enumerate(times)]
    events = tmp_path / "events"
    old = "dt=2026-09-21/part-old.parquet"
    write_parquet_files([rows_table(rows)], [events / old], row_group_size=2)
    found = sources.persons_since(events, [old], [old], NOW)
    assert sorted(found) == [f"{3:016x}", f"{4:016x}"]
    # A file the last build did not read: all its persons, whenever their events were.
    assert len(sources.persons_since(events, [], [old], NOW + DAY_MS)) == len(times)
