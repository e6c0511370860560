"""DMP_ENGINE=spark end to end: builds and segment runs write what the polars engine
writes (snapshot rows, members, counts, changes); incremental runs equal full ones."""

from __future__ import annotations

import shutil
import uuid

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from dmp.cli import cli, main
from dmp.ingest.eventlog import scan_events
from dmp.ingest.worker import Worker
from dmp.matrix import builds, snapshots
from dmp.membership import definitions, results, runs
from dmp.membership.results import segments_dir
from dmp.synth import example_segments
from segments.definition import parse_definition
from segments.personkey import person_id_of
from tests.factories import make_hit, run_synth, send_hits


def _apply_examples(redis, n: int = 50) -> None:
    """Store the example segments as `dmp segments apply` does."""
    definitions.apply_definitions(redis, [parse_definition(d) for d in example_segments(n)])


def _run_files(config) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Return the latest run's members, counts and changes (sorted, run id left out)."""
    last = results.latest_run(config)
    folder = segments_dir(config)
    members = pl.read_parquet(folder / last["members_file"])
    counts = pl.read_parquet(folder / last["counts_file"])
    if last["counts_by"] == "person_key":  # polars counts dmp's ids by key, Spark by id
        ids = pl.col("person_key").map_elements(person_id_of, return_dtype=pl.Utf8)
        counts = counts.select(ids.alias("person_id"), pl.exclude("person_key"))
    counts = counts.sort("person_id")
    if "changes_file" not in last:  # a run that changed nothing writes none
        return members, counts, pl.DataFrame()
    changes = pl.read_parquet(folder / last["changes_file"]).drop("run_id")
    return members, counts, changes.sort("segment_id", "change", "person_id")


def test_spark_builds_and_runs_write_what_polars_writes(spark_config, runner, redis, config):
    """The same data, the same as-of time: a Spark build gives the polars snapshot's rows,
    and a Spark run (its first) the polars run's members, counts and changes."""
    as_of = run_synth(runner, 120, 30, 5)
    _apply_examples(redis)
    polars_built = builds.build(redis, config, as_of)
    runs.run(redis, config, full=True, build_matrix=False)
    expected = _run_files(config)
    shutil.rmtree(segments_dir(config))  # the Spark run is a first run too
    spark_built = builds.build(redis, spark_config, as_of)
    ran = runs.run(redis, spark_config, full=True, build_matrix=False)
    assert_frame_equal(pl.read_parquet(spark_built.path), pl.read_parquet(polars_built.path))
    got = _run_files(spark_config)
    for one, other in zip(got, expected, strict=True):
        assert_frame_equal(one, other)
    assert expected[0].height > 100 and expected[1].height > 20 and sum(ran.members.values())
    _, manifest = snapshots.latest_build(config)
    assert manifest["engine"] == "spark" and manifest["incremental"] is False


def _touch(redis, config, at: int, n: int = 12) -> None:
    """Send ``n`` known cookies one whitepaper download each at ``at``, ingested."""
    uids = scan_events(config.events_dir).select("uid").drop_nulls().unique().collect()
    hits = [
        make_hit(
            event_id=uuid.uuid4().hex,
            uid=uid,
            event="whitepaper_download",
            type="track",
            timestamp=at,
            received_at=at,
        )
        for uid in sorted(uids["uid"])[:n]
    ]
    send_hits(redis, *hits)
    Worker(redis, config).run(once=True)


def test_an_incremental_spark_run_equals_a_full_one(spark_config, runner, redis, config):
    """After new events, a Spark run that recounts only the touched persons keeps the
    same members and did counts as one that counts everyone; a polars incremental build
    after a Spark build (no state kept) falls back to a full one with the same rows."""
    as_of = run_synth(runner, 120, 30, 6)
    _apply_examples(redis)
    builds.build(redis, spark_config, as_of)
    runs.run(redis, spark_config, build_matrix=False)
    later = as_of + 3_600_000
    _touch(redis, spark_config, later - 60_000)
    builds.build(redis, spark_config, later, incremental=True)
    quick = runs.run(redis, spark_config, build_matrix=False)
    members, counts, _ = _run_files(spark_config)
    assert quick.incremental and 0 < quick.recounted < counts.height
    whole = runs.run(redis, spark_config, full=True, build_matrix=False)
    assert not whole.incremental and whole.entered == whole.left == 0
    again, recounted, _ = _run_files(spark_config)
    assert_frame_equal(again, members)
    assert_frame_equal(recounted, counts)
    spark_rows = pl.read_parquet(snapshots.latest_snapshot(config))
    polars_built = builds.build(redis, config, later, incremental=True)
    _, manifest = snapshots.latest_build(config)
    assert manifest["engine"] == "polars" and manifest["incremental"] is False
    assert_frame_equal(pl.read_parquet(polars_built.path), spark_rows)


def test_a_segment_that_fails_on_spark_fails_alone(spark_config, runner, redis, monkeypatch):
    """A segment whose Spark SQL raises on rows: the run records it as failed, runs the
    other segments and keeps its members of the last run."""
    from segments import sql

    as_of = run_synth(runner, 60, 20, 7)
    _apply_examples(redis, 6)
    first = runs.run(redis, spark_config, full=True)
    broken = next(s for s, n in first.members.items() if n)
    trees = {d["id"]: parse_definition(d).where for d in example_segments(6)}
    original = sql.node_sql
    monkeypatch.setattr(  # ANSI mode: a cast that fails raises on the first row
        sql,
        "node_sql",
        lambda node, dialect, profile=(): (
            "(CAST(person_id AS INT) > 0)"
            if node == trees[broken]
            else original(node, dialect, profile)
        ),
    )
    ran = runs.run(redis, spark_config, build_matrix=False)
    assert set(ran.failed) == {broken} and "CAST" in ran.failed[broken].upper()
    assert ran.members == first.members and ran.entered == ran.left == 0
    assert ran.as_of >= as_of - 60_000


def test_a_bad_engine_exits_2_with_one_line(config, capsys, monkeypatch):
    """DMP_ENGINE=flink: every command refuses it, exit code 2, one line naming it."""
    monkeypatch.setenv("DMP_ENGINE", "flink")
    monkeypatch.setenv("DMP_DATA_DIR", str(config.data_dir))
    with pytest.raises(SystemExit) as exited:
        main(["matrix", "build"])
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and "\n" not in err
    assert "DMP_ENGINE must be polars or spark, not 'flink'" in err


def test_matrix_build_says_which_engine_built_it(spark_config, runner, redis):
    """`dmp matrix build` with DMP_ENGINE=spark builds on Spark and says so."""
    run_synth(runner, 30, 10, 8)
    runner.env.update({"DMP_ENGINE": "spark", "DMP_SPARK_MASTER": "local[2]"})
    shown = runner.invoke(cli, ["matrix", "build", "--json"])
    assert shown.exit_code == 0, shown.output
    assert '"engine": "spark"' in shown.output
