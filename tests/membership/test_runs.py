"""Segment runs: membership snapshots, changes, lookup sets; incremental == full."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import threading
import time

import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

from dmp.cli import cli, main
from dmp.ingest.eventlog import event_row, rows_table
from dmp.ingest.livefeed import LiveFeed
from dmp.ingest.logindex import LogIndex
from dmp.ingest.worker import Worker
from dmp.matrix import builds, snapshots, sources
from dmp.membership import definitions, live, lookupsets, results, runs, schedule
from dmp.people import lifecycle
from dmp.records import Stage
from dmp.storage import keyspace, locks
from segments.personkey import person_id_of
from segments.scoring import DAY_MS
from tests.factories import apply_segments, make_hit, make_identify, run_synth, send_hits
from tests.served import wait_for

SEGMENTS = """
id: active-week
name: Active this week
where: {did: {event: page, within_days: 7, count_gte: 2}}
---
id: engaged
name: Engaged known people
where:
  all:
    - tier: {gte: medium}
    - score: {gte: 10}
    - not: {did: {event: page, url_contains: /careers}}
---
id: pricing-then-demo
name: Pricing, then a demo within two days
where:
  did:
    event: page
    url_contains: /pricing
    within_days: 30
    then: {event: demo_request, within_days: 2}
---
id: sales-ready
where: {stage: {gte: sal}}
"""


def _members(config) -> pl.DataFrame:
    return results.latest_members(config).collect().sort("segment_id", "person_id")


def _redis_members(redis) -> pl.DataFrame:
    rows = [
        (keyspace.segment_id_of(key), pid)
        for key in redis.scan_iter(match=keyspace.segment_pattern("members"))
        for pid in redis.smembers(key)
    ]
    return pl.DataFrame(rows, schema=lookupsets.MEMBER_SCHEMA, orient="row").sort(
        "segment_id", "person_id"
    )


def _person_sets(redis) -> pl.DataFrame:
    rows = [
        (sid, key.split("{")[1].split("}")[0])
        for key in redis.scan_iter(match=keyspace.person_pattern("segments"))
        for sid in redis.smembers(key)
    ]
    return pl.DataFrame(rows, schema=lookupsets.MEMBER_SCHEMA, orient="row").sort(
        "segment_id", "person_id"
    )


@pytest.fixture
def synth(runner, redis) -> int:
    """Return a time just after 150 synth persons' 40 days of data."""
    return run_synth(runner, 150, 40, 4)


def test_incremental_run_equals_full_run(synth, redis, drain, config):
    """New events, a merge, a sales stage and eleven days passing: the incremental run
    recounts only some persons and finds exactly the members and changes a full run does."""
    apply_segments(redis, SEGMENTS)
    start = synth
    builds.build(redis, config, start)
    first = runs.run(redis, config, build_matrix=False)
    assert first.members["engaged"] > 0 and first.members["active-week"] > 0
    assert first.entered == sum(first.members.values()) and first.left == 0
    snapshot = pl.read_parquet(snapshots.latest_snapshot(config))
    known = snapshot.filter(pl.col("email").is_not_null())["person_id"].to_list()
    email = snapshot.filter(pl.col("person_id") == known[0])["email"].item()
    ready_before = _members(config).filter(pl.col("segment_id") == "sales-ready")["person_id"]
    promoted = next(p for p in known[1:] if p not in ready_before)
    later = start + 11 * DAY_MS
    send_hits(
        redis,
        make_hit(uid="c-new", timestamp=later - DAY_MS, url="https://acme.de/pricing"),
        make_hit(uid="c-new", timestamp=later - DAY_MS + 5, type="track", event="demo_request"),
        make_hit(uid="c-new", timestamp=later - DAY_MS + 9, url="https://acme.de/a"),
        make_identify(email, uid="c-new"),
    )
    drain()
    lifecycle.record_stage(redis, promoted, Stage.SAL, source="api", at_ms=later - DAY_MS)
    builds.build(redis, config, later, incremental=True)
    folder, backup = results.segments_dir(config), config.data_dir / "segments-before"
    shutil.copytree(folder, backup)
    patterns = (keyspace.segment_pattern("members"), keyspace.person_pattern("segments"))
    sets = {k: redis.smembers(k) for p in patterns for k in redis.scan_iter(match=p)}
    applied = redis.get(keyspace.SEGMENTS_APPLIED)

    inc = runs.run(redis, config, build_matrix=False)
    assert inc.incremental and 0 < inc.recounted < snapshot.height
    inc_run = results.latest_run(config)
    assert inc_run["counts_by"] == "person_key"  # the ids are dmp's: counted by number
    inc_members, inc_counts = _members(config), _read(config, inc_run["counts_file"])
    inc_changes = _read(config, inc_run["changes_file"]).drop("run_id")
    assert_frame_equal(_redis_members(redis), inc_members)
    assert_frame_equal(_person_sets(redis), inc_members)

    # The full run from the same starting point (files and Redis sets as they were).
    shutil.rmtree(folder)
    shutil.copytree(backup, folder)
    for key in (k for p in patterns for k in redis.scan_iter(match=p)):
        redis.delete(key)
    for key, members in sets.items():
        redis.sadd(key, *members)
    redis.set(keyspace.SEGMENTS_APPLIED, applied)
    full = runs.run(redis, config, full=True, build_matrix=False)
    assert not full.incremental
    full_run = results.latest_run(config)
    assert_frame_equal(inc_members, _members(config))
    assert_frame_equal(inc_counts, _read(config, full_run["counts_file"]))
    assert_frame_equal(inc_changes, _read(config, full_run["changes_file"]).drop("run_id"))
    assert (inc.entered, inc.left, inc.members) == (full.entered, full.left, full.members)
    # Time alone moved people: the week-long window emptied out, the stage came in.
    left = inc_changes.filter(pl.col("change") == "left")
    assert "active-week" in left["segment_id"].to_list()
    assert promoted in inc_members.filter(pl.col("segment_id") == "sales-ready")["person_id"]
    assert known[0] in inc_members.filter(pl.col("segment_id") == "pricing-then-demo")["person_id"]


def test_counts_are_kept_only_by_the_key_they_were_counted_by(synth, redis, config):
    """The counts of a run by person id (one of a matrix whose ids were not all dmp's, or
    of a version before person keys) are not kept by a run counting by key: it counts
    everyone again, with the same members."""
    apply_segments(redis, SEGMENTS)
    builds.build(redis, config, synth)
    first = runs.run(redis, config, build_matrix=False)
    again = runs.run(redis, config, build_matrix=False)
    assert again.incremental and again.recounted == 0  # nothing changed: all kept
    manifest = results.latest_run(config)
    assert manifest["counts_by"] == "person_key"
    folder = results.segments_dir(config)
    counts = pl.read_parquet(folder / manifest["counts_file"])
    by_id = counts.select(
        pl.col("person_key").map_elements(person_id_of, return_dtype=pl.Utf8).alias("person_id"),
        pl.exclude("person_key"),
    )
    by_id.write_parquet(folder / manifest["counts_file"])
    run_file = folder / f"run-{manifest['run_id']}.json"
    run_file.write_text(json.dumps({**manifest, "counts_by": "person_id"}))

    third = runs.run(redis, config, build_matrix=False)

    assert not third.incremental and third.recounted == counts.height
    assert third.members == first.members


def _read(config, name: str) -> pl.DataFrame:
    frame = pl.read_parquet(results.segments_dir(config) / name)
    return frame.sort(frame.columns[:3] if "change" in frame.columns else frame.columns[0])


def test_changes_record_time_version_and_deletions(synth, redis, config):
    """Changes carry the as-of time, run and version; a deleted segment's members all leave
    and its lookup sets empty; a changed definition runs with its new version."""
    apply_segments(redis, SEGMENTS)
    first = runs.run(redis, config)
    assert first.versions == dict.fromkeys(first.versions, 1)
    changes = _read(config, results.latest_run(config)["changes_file"])
    assert set(changes["change"]) == {"entered"}
    assert set(changes["at"]) == {first.as_of} and set(changes["run_id"]) == {first.run_id}
    engaged = first.members["engaged"]
    assert redis.scard(keyspace.segment("engaged", "members")) == engaged
    assert definitions.delete_segment(redis, "engaged") == 2
    apply_segments(redis, SEGMENTS.replace("count_gte: 2", "count_gte: 1").split("---")[0])
    second = runs.run(redis, config)
    assert "engaged" not in second.members and second.versions["active-week"] == 2
    changes = _read(config, results.latest_run(config)["changes_file"])
    gone = changes.filter(pl.col("segment_id") == "engaged")
    assert gone.height == engaged and set(gone["change"]) == {"left"}
    assert set(gone["version"]) == {1}
    assert redis.scard(keyspace.segment("engaged", "members")) == 0
    assert not any("engaged" in redis.smembers(k) for k in redis.scan_iter("dmp:person:*:seg*"))
    assert [r["run_id"] for r in results.run_records(redis)] == [second.run_id, first.run_id]


def test_lookup_sets_are_rewritten_when_redis_missed_a_run(synth, redis, config):
    """Redis sets that are not at the last run (lost, or a crash between files and Redis)
    are rewritten from the snapshot; stale members disappear."""
    apply_segments(redis, SEGMENTS)
    runs.run(redis, config)
    redis.sadd(keyspace.segment("engaged", "members"), "ffffffffffffffff")
    redis.srem(keyspace.segment("engaged", "members"), _members(config)["person_id"][0])
    redis.set(keyspace.SEGMENTS_APPLIED, "some-other-run")
    runs.run(redis, config)
    assert_frame_equal(_redis_members(redis), _members(config))
    assert_frame_equal(_person_sets(redis), _members(config))


def test_one_run_at_a_time(synth, redis, config):
    """A run waits for the lock another holds, and says so when it cannot get it."""
    apply_segments(redis, SEGMENTS)
    with runs.run_lock(redis), pytest.raises(locks.Busy):
        runs.run(redis, config, wait_seconds=0.3)
    assert runs.run(redis, config).members


def test_cli_run_and_members(synth, redis, runner, config, tmp_path):
    """`dmp segments run` and `members ID --json`; unknown ids exit 2 with one line."""
    path = tmp_path / "s.yaml"
    path.write_text(SEGMENTS)
    assert runner.invoke(cli, ["segments", "apply", str(path)]).exit_code == 0
    result = runner.invoke(cli, ["segments", "run", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["members"]["engaged"] > 0
    listed = runner.invoke(cli, ["segments", "members", "engaged", "--json"])
    members = json.loads(listed.output)
    assert len(members) == record["members"]["engaged"]
    assert {"person_id", "email", "tier", "stage", "score"} <= set(members[0])
    text = runner.invoke(cli, ["segments", "run"]).output
    assert "engaged" in text and "entered" in text


def test_cli_members_say_who_may_be_reached(redis, config, runner):
    """`segments members` shows, per member, whether ads and email may reach them now: ads
    with an identifier holding ads consent, email with an address holding email consent."""
    from tests.exporters.test_sync import ingest_and_run, person

    apply_segments(redis, "id: known\nwhere: {tier: {gte: medium}}")
    ada = person("ada@acme.de")._replace(consent={"ads": True, "email": True})
    hits = (
        ada,
        person("bob@acme.de"),
        person("eve@acme.de", ads=False),
    )
    ingest_and_run(redis, config, *hits)
    listed = json.loads(runner.invoke(cli, ["segments", "members", "known", "--json"]).output)
    reach = {m["email"]: m["reachable"] for m in listed}
    assert reach["ada@acme.de"] == {"ads": True, "email": True}
    assert reach["bob@acme.de"] == {"ads": True, "email": False}
    assert reach["eve@acme.de"] == {"ads": False, "email": False}
    text = runner.invoke(cli, ["segments", "members", "known"]).output.splitlines()
    assert text[0].split()[-2:] == ["ADS", "EMAIL"]
    eve = next(line for line in text if "eve@acme.de" in line)
    assert eve.split()[-2:] == ["no", "no"]


def test_cli_members_of_unknown_segment(redis, main_argv, capsys):
    with pytest.raises(SystemExit) as ended:
        main([*main_argv, "segments", "members", "nope"])
    err = capsys.readouterr().err.strip()
    assert ended.value.code == 2 and len(err.splitlines()) == 1 and "no segment 'nope'" in err


def test_the_schedule_runs_when_new_events_arrive(synth, redis, drain, config):
    """With the schedule on, a qualifying visit reaches the lookup sets without a manual
    run; nothing new, no run (until segments_every)."""
    apply_segments(redis, "id: pricing\nwhere: {did: {event: page, url_contains: /pricing-x}}\n")
    with _schedule(redis, config, every=3600):
        first = wait_for(lambda: results.latest_run(config), 30, "the schedule")
        assert first["members"] == {"pricing": 0}
        send_hits(redis, make_hit(uid="c-fresh", url="https://acme.de/pricing-x"))
        drain()
        members = keyspace.segment("pricing", "members")
        with runs.run_lock(redis):  # a long run under way does not hold the lane up
            pid = wait_for(lambda: next(iter(redis.smembers(members)), None), 30, "the schedule")
        assert redis.smembers(keyspace.person(pid, "segments")) == {"pricing"}
        # That was the live lane: no run since the first (the next is an hour away).
        assert results.latest_run(config)["run_id"] == first["run_id"]
        assert redis.zscore(keyspace.SEGMENTS_LIVE, pid) is not None


def test_the_live_lane_evaluates_a_batch_before_its_flush(synth, redis, config, caplog):
    """The worker hands each batch's rows to the lane (in its own process): a qualifying
    visit reaches the lookup sets before the flush writes it (with a look only every ten
    minutes), and stays when the flush lands, whose persons are not evaluated again."""
    apply_segments(redis, "id: pricing\nwhere: {did: {event: page, url_contains: /pricing-x}}\n")
    runs.run(redis, config)
    files = set(sources.event_files(config.events_dir))
    feed = LiveFeed()
    worker = Worker(redis, config, feed=feed)
    members = keyspace.segment("pricing", "members")
    with _schedule(redis, config, every=3600, latency=600, feed=feed):
        others = (make_hit(uid=f"c-other-{i}", url="https://acme.de/") for i in range(2))
        send_hits(redis, make_hit(uid="c-fed", url="https://acme.de/pricing-x"), *others)
        assert worker.acquire_lease()
        worker.start()
        wait_for(lambda: worker.step(), 10, "the batch")
        worker.step()  # idle: its profile writes applied, its rows go to the lane
        wait_for(lambda: redis.scard(members) == 1, 30, "the live lane")
        assert set(sources.event_files(config.events_dir)) == files  # not written yet
        worker.flush()
        wait_for(lambda: set(sources.event_files(config.events_dir)) > files, 10, "the flush")
        caplog.set_level(logging.INFO, logger="dmp.membership.live")
        caplog.clear()
        send_hits(redis, make_hit(uid="c-later", url="https://acme.de/pricing-x"))
        wait_for(lambda: worker.step(), 10, "the second batch")
        worker.step()
        wait_for(lambda: redis.scard(members) == 2, 30, "the live lane")
        worker.flush()
        worker.release_lease()
        ticks = [r.getMessage() for r in caplog.records if "segments live:" in r.getMessage()]
        assert ticks and all(t.startswith("segments live: 1 persons") for t in ticks), ticks
        runs.run(redis, config)  # from the files: the same
        assert redis.scard(members) == 2


def test_a_tick_counts_each_event_once_from_files_and_rows_not_flushed(synth, redis, config):
    """A person's history is their files plus the rows handed over and not flushed yet;
    an event in both (its flush landed between the two reads) counts once."""
    apply_segments(
        redis, "id: twice\nwhere: {did: {event: page, url_contains: /twice, count_gte: 2}}\n"
    )
    runs.run(redis, config)
    before = set(sources.event_files(config.events_dir))
    feed = LiveFeed()
    worker = Worker(redis, config, feed=feed)
    assert worker.acquire_lease()
    worker.start()
    now = int(time.time() * 1000)
    send_hits(redis, make_hit(uid="c-twice", url="https://acme.de/twice", timestamp=now - 9000))
    wait_for(lambda: worker.step(), 10, "the first batch")
    worker.step()  # idle: handed over
    worker.flush()  # the first visit is in a file now, and still among the rows handed over
    send_hits(redis, make_hit(uid="c-twice", url="https://acme.de/twice", timestamp=now - 5000))
    wait_for(lambda: worker.step(), 10, "the second batch")
    worker.step()  # idle: handed over
    taken, _ = feed.drain()
    first, second = (rows_table(rows) for _, rows in taken)
    files = sorted(set(sources.event_files(config.events_dir)) - before)
    index = LogIndex(config.events_dir)
    index.update(sources.event_files(config.events_dir))
    members = keyspace.segment("twice", "members")
    live.live_tick(redis, config, files, as_of_ms=now, index=index, unflushed=first)
    assert redis.scard(members) == 0  # one visit, in a file and handed over: once
    pid = first.column("person_id")[0].as_py()
    both = pa.concat_tables([first, second])
    tick = live.live_tick(redis, config, [], {pid}, as_of_ms=now, index=index, unflushed=both)
    assert tick.person_ids == (pid,) and redis.smembers(members) == {pid}
    # A run that started before the second visit's flush does not see it: it leaves the
    # person be; a run a period later (with the flush landed) settles them the same.
    runs.run(redis, config)
    assert redis.smembers(members) == {pid}
    worker.flush()
    worker.release_lease()
    builds.build(redis, config, now + live.UNFLUSHED_NOTE_MS + 1000, incremental=True)
    runs.run(redis, config, build_matrix=False)
    assert redis.smembers(members) == {pid} and not redis.zscore(keyspace.SEGMENTS_LIVE, pid)


def test_the_schedule_runs_every_segments_every_seconds(synth, redis, config):
    """Without new data, runs still come (time moves); a failing live lane does not stop them."""
    apply_segments(redis, SEGMENTS)
    with _schedule(redis, config, every=0.5):
        first = wait_for(lambda: results.latest_run(config), 30, "the schedule")["run_id"]
        redis.sadd(keyspace.MATRIX_TOUCHED, "not-a-person")  # a mark the lane cannot read
        wait_for(lambda: results.latest_run(config)["run_id"] != first, 30, "the schedule")


def test_the_schedule_runs_when_the_api_asks(synth, redis, config):
    """POST /api/v1/segments/runs asks; the schedule runs at once, not in an hour."""
    apply_segments(redis, SEGMENTS)
    with _schedule(redis, config, every=3600):
        first = wait_for(lambda: results.latest_run(config), 30, "the schedule")["run_id"]
        redis.set(keyspace.SEGMENTS_RUN_REQUESTED, 1)
        wait_for(lambda: results.latest_run(config)["run_id"] != first, 30, "the schedule")
        assert not redis.exists(keyspace.SEGMENTS_RUN_REQUESTED)


@contextlib.contextmanager
def _schedule(redis, config, every: float, latency: float = 0.05, feed=None):
    """Run the worker's schedule (both threads) for the test's duration; stop it after."""
    quick = dataclasses.replace(config, segments_latency=latency, segments_every=every)
    stop = threading.Event()
    runner = schedule.start_schedule(redis, quick, stop, feed)
    try:
        yield runner
    finally:
        stop.set()
        if feed is not None:
            feed.woken.set()  # the lane waits for a flush or its latency, then sees the stop
        runner.join(30)
    assert not runner.is_alive()


def test_preview_sizes_breaks_down_and_explains(synth, redis, runner, config, tmp_path):
    """A preview of a file or a stored id: size, tier/stage/channel counts that add up,
    and sample members with the conditions they met; nothing is stored."""
    builds.build(redis, config)
    path = tmp_path / "s.yaml"
    path.write_text(SEGMENTS.split("---")[1])
    result = runner.invoke(cli, ["segments", "preview", str(path), "--json", "--sample", "3"])
    assert result.exit_code == 0, result.output
    (res,) = json.loads(result.output)
    assert definitions.list_segments(redis) == []
    assert 0 < res["members"] < res["persons"]
    assert sum(res["by_tier"].values()) == res["members"]
    assert sum(res["by_stage"].values()) <= res["members"]
    assert set(res["by_tier"]) <= {"medium", "high"}  # tier gte medium
    paths = [c["path"] for c in res["conditions"]]
    assert paths == ["where.all[0]", "where.all[1]", "where.all[2]"]
    assert all(c["members_meeting"] == res["members"] for c in res["conditions"])
    assert len(res["sample"]) == 3 and res["sample"][0]["score"] >= res["sample"][-1]["score"]
    assert [m["path"] for m in res["sample"][0]["met"]] == paths
    assert res["conditions"][1]["condition"] == {"score": {"gte": 10}}
    # The same definition stored previews the same; the text form shows bars.
    apply_segments(redis, SEGMENTS)
    stored = json.loads(runner.invoke(cli, ["segments", "preview", "engaged", "--json"]).output)
    assert stored["members"] == res["members"]
    text = runner.invoke(cli, ["segments", "preview", "engaged"]).output
    assert "by tier:" in text and "█" in text and "met: .all[0]" in text


def test_overlap_counts_pairs(synth, redis, runner, config):
    """The overlap of each pair is the size of the intersection of their memberships."""
    apply_segments(redis, SEGMENTS)
    runs.run(redis, config)
    res = json.loads(runner.invoke(cli, ["segments", "overlap", "--json"]).output)
    members = _members(config)
    sets = {s: set(members.filter(pl.col("segment_id") == s)["person_id"]) for s in res["segments"]}
    for i, a in enumerate(res["segments"]):
        assert res["members"][i] == len(sets[a])
        for j, b in enumerate(res["segments"]):
            assert res["overlap"][i][j] == len(sets[a] & sets[b])
    assert "100%" in runner.invoke(cli, ["segments", "overlap"]).output


def test_preview_and_overlap_need_data(redis, main_argv, capsys):
    for args in (["preview", "engaged"], ["overlap"]):
        with pytest.raises(SystemExit) as ended:
            main([*main_argv, "segments", *args])
        err = capsys.readouterr().err.strip()
        assert ended.value.code == 2 and len(err.splitlines()) == 1


def test_the_run_lock_is_renewed_and_a_dead_holders_expires(synth, redis, config, monkeypatch):
    """A living holder keeps the lock past its expiry; a dead one's lapses and the next
    run gets it; a run that lost its lock writes nothing."""
    monkeypatch.setattr(locks, "HOLD_SECONDS", 0.6)
    with runs.run_lock(redis) as lock:
        time.sleep(1.5)
        assert lock.held()
    assert redis.get(keyspace.SEGMENTS_LOCK) is None
    redis.set(keyspace.SEGMENTS_LOCK, "a-dead-worker", px=500)
    apply_segments(redis, SEGMENTS)
    assert runs.run(redis, config, wait_seconds=5).members
    before = results.latest_run(config)["run_id"]

    def lose_it(*args, **kwargs):
        redis.set(keyspace.SEGMENTS_LOCK, "someone-else")
        return original(*args, **kwargs)

    original = runs.membership
    monkeypatch.setattr(runs, "membership", lose_it)
    with pytest.raises(locks.Busy, match="lock was lost"):
        runs.run(redis, config)
    assert results.latest_run(config)["run_id"] == before


@pytest.mark.parametrize("indexed", [False, True])
def test_the_live_lane_finds_what_a_run_finds(synth, redis, drain, config, indexed):
    """Between runs, the persons of new event files (and those marked touched) get the
    lookup sets a run at the same time gives them; nothing else moves. With the log's
    index (as the schedule ticks), their history is read from their files alone."""
    apply_segments(redis, SEGMENTS)
    start = synth
    builds.build(redis, config, start)
    runs.run(redis, config, build_matrix=False)
    before_files = set(sources.event_files(config.events_dir))
    sets_before = _person_sets(redis)
    snapshot = pl.read_parquet(snapshots.latest_snapshot(config))
    # Persons with an email who are not in pricing-then-demo yet (synth's data ends now,
    # so which ones are depends on the time of day): the new hits must move known[0].
    already = set(sets_before.filter(pl.col("segment_id") == "pricing-then-demo")["person_id"])
    emails = snapshot.filter(pl.col("email").is_not_null())["person_id"].to_list()
    engaged = set(sets_before.filter(pl.col("segment_id") == "engaged")["person_id"])
    # engaged ones first: their history counts (a tick that missed it would drop them)
    known = sorted((pid for pid in emails if pid not in already), key=lambda p: p not in engaged)
    email = snapshot.filter(pl.col("person_id") == known[0])["email"].item()
    later = start + 3 * DAY_MS
    send_hits(
        redis,
        make_hit(uid="c-live", timestamp=later - 60_000, url="https://acme.de/pricing"),
        make_hit(uid="c-live", timestamp=later - 50_000, type="track", event="demo_request"),
        make_hit(uid="c-live", timestamp=later - 40_000, url="https://acme.de/b"),
        make_identify(email, uid="c-live"),
    )
    drain()
    lifecycle.record_stage(redis, known[3], Stage.SAL, source="api", at_ms=later - 1000)
    new = sorted(set(sources.event_files(config.events_dir)) - before_files)
    marks = redis.smembers(keyspace.MATRIX_TOUCHED)
    index = LogIndex(config.events_dir) if indexed else None
    if index is not None:
        index.update(sources.event_files(config.events_dir))
    tick = live.live_tick(redis, config, new, marks, later, index=index)
    assert {known[0], known[3]} <= set(tick.person_ids) and tick.moved > 0
    touched = pl.col("person_id").is_in(list(tick.person_ids))
    after_live = _person_sets(redis)
    # Nobody else moved.
    assert_frame_equal(after_live.filter(~touched), sets_before.filter(~touched))
    # A run at the same time gives the touched persons the same sets.
    builds.build(redis, config, later, incremental=True)
    runs.run(redis, config, build_matrix=False)
    assert_frame_equal(after_live.filter(touched), _members(config).filter(touched))
    assert known[0] in after_live.filter(pl.col("segment_id") == "pricing-then-demo")["person_id"]
    assert known[3] in after_live.filter(pl.col("segment_id") == "sales-ready")["person_id"]
    # After the run, every lookup set is the run's snapshot, the merged-away cookie person
    # included (it is in nothing), and the live notes are settled.
    assert_frame_equal(_person_sets(redis), _members(config))
    assert_frame_equal(_redis_members(redis), _members(config))
    assert not redis.zcard(keyspace.SEGMENTS_LIVE)


def test_live_members_of_a_deleted_segment_are_removed_by_the_next_run(synth, redis, drain, config):
    """The live lane adds someone to a segment no run has recorded yet; the segment is
    deleted: the next run leaves no set of it behind."""
    apply_segments(redis, SEGMENTS)
    runs.run(redis, config)
    apply_segments(redis, "id: probe\nwhere: {did: {event: page, url_contains: /probe-page}}\n")
    before = set(sources.event_files(config.events_dir))
    send_hits(
        redis,
        make_hit(
            uid="c-probe",
            url="https://acme.de/probe-page",
            timestamp=int(time.time() * 1000) - 5000,
        ),
    )
    drain()
    new = sorted(set(sources.event_files(config.events_dir)) - before)
    live.live_tick(redis, config, new)
    assert redis.scard(keyspace.segment("probe", "members")) == 1
    definitions.delete_segment(redis, "probe")
    runs.run(redis, config)
    assert not redis.exists(keyspace.segment("probe", "members"))
    assert_frame_equal(_person_sets(redis), _members(config))


def test_a_run_settles_what_the_live_lane_moved(synth, redis, config):
    """A person the live lane moved since the last run is set to what the run finds, even
    when the run sees no change for them (a window closed between tick and run)."""
    apply_segments(redis, SEGMENTS)
    runs.run(redis, config)
    members = _members(config)
    pid = members.filter(pl.col("segment_id") == "engaged")["person_id"][0]
    # As a live tick would have left it: out of engaged, into sales-ready, noted.
    at = results.latest_run(config)["as_of"]
    lookupsets.move_sets(redis, {pid: {"sales-ready"}}, {"engaged", "sales-ready"}, noted_at=at)
    assert redis.zscore(keyspace.SEGMENTS_LIVE, pid) == at
    runs.run(redis, config)
    assert_frame_equal(_person_sets(redis), _members(config))
    assert_frame_equal(_redis_members(redis), _members(config))
    assert not redis.exists(keyspace.SEGMENTS_LIVE)
    # A move noted after a run's as-of time (a run on an older matrix) waits for a later run.
    lookupsets.move_sets(redis, {pid: set()}, {"engaged"}, noted_at=at + 10**12)
    runs.run(redis, config, build_matrix=False)
    assert redis.zscore(keyspace.SEGMENTS_LIVE, pid) == at + 10**12


def test_touchpoints_stamped_ahead_count_when_their_time_comes(synth, redis, drain, config):
    """A qualifying touchpoint stamped 2 s after the tick (a client's clock ahead) is
    named for another look, and the next tick after its time finds the person in."""
    apply_segments(redis, "id: pricing\nwhere: {did: {event: page, url_contains: /pricing-x}}\n")
    runs.run(redis, config)
    before = set(sources.event_files(config.events_dir))
    now = int(time.time() * 1000)
    send_hits(redis, make_hit(uid="c-ahead", url="https://acme.de/pricing-x", timestamp=now + 2000))
    drain()
    new = sorted(set(sources.event_files(config.events_dir)) - before)
    first = live.live_tick(redis, config, new, as_of_ms=now)
    assert first.moved == 0 and len(first.ahead) == 1
    again = live.live_tick(redis, config, [], set(first.ahead), as_of_ms=now + 3000)
    assert again.moved == 1 and not again.ahead
    assert redis.smembers(keyspace.segment("pricing", "members")) == set(first.ahead)


def test_cli_lists_runs(synth, redis, runner, config):
    apply_segments(redis, SEGMENTS)
    assert "no segment run yet" in runner.invoke(cli, ["segments", "runs"]).output
    first = runs.run(redis, config)
    second = runs.run(redis, config)
    listed = json.loads(runner.invoke(cli, ["segments", "runs", "--json"]).output)
    assert [r["run_id"] for r in listed] == [second.run_id, first.run_id]
    assert listed[1]["entered"] == first.entered and not listed[1]["incremental"]
    text = runner.invoke(cli, ["segments", "runs", "--limit", "1"]).output
    assert len(text.strip().splitlines()) == 1 and "recounted" in text


def test_status_shows_the_segments(synth, redis, runner, config):
    apply_segments(redis, SEGMENTS)
    run = runs.run(redis, config)
    state = json.loads(runner.invoke(cli, ["status", "--json"]).output)["segments"]
    assert state["defined"] == 4 and state["last_run"]["run_id"] == run.run_id
    assert state["last_run"]["memberships"] == sum(run.members.values())
    assert "last run" in runner.invoke(cli, ["status"]).output


def test_a_run_keeps_live_moves_newer_than_what_it_saw(synth, redis, config):
    """A person the live lane moved after a run's as-of time keeps that move when the run
    applies its (older) changes; the note waits for a later run."""
    apply_segments(redis, SEGMENTS)
    first = runs.run(redis, config)
    last = results.latest_run(config)
    pid = _members(config).filter(pl.col("segment_id") == "engaged")["person_id"][0]
    later = first.as_of + 10_000
    # A tick found them in (nothing to move) after the run's as-of: noted all the same.
    assert lookupsets.move_sets(redis, {pid: {"engaged"}}, {"engaged"}, noted_at=later) == 0
    assert redis.zscore(keyspace.SEGMENTS_LIVE, pid) == later
    lookupsets.move_sets(redis, {pid: {"engaged"}}, {"engaged"}, noted_at=later - 5)
    assert redis.zscore(keyspace.SEGMENTS_LIVE, pid) == later  # a note only moves on
    change = ("engaged", pid, "left", first.as_of + 1, "r2", 1)
    left = pl.DataFrame([change], schema=runs.CHANGE_SCHEMA, orient="row")
    theirs = (pl.col("person_id") == pid) & (pl.col("segment_id") == "engaged")
    members = _members(config).filter(~theirs)
    manifest = {**last, "as_of": first.as_of + 1, "run_id": "r2"}
    lookupsets.apply_run(redis, manifest, members, left, last)
    assert "engaged" in redis.smembers(keyspace.person(pid, "segments"))
    assert redis.zscore(keyspace.SEGMENTS_LIVE, pid) == later


def test_a_rewrite_keeps_live_moves_newer_than_the_run(synth, redis, config):
    """When the lookup sets are rewritten from a run's snapshot, a person the live lane
    moved after the run's as-of time keeps the lane's sets."""
    apply_segments(redis, SEGMENTS)
    first = runs.run(redis, config)
    pid = _members(config).filter(pl.col("segment_id") == "engaged")["person_id"][0]
    moved = {pid: {"sales-ready"}}
    lookupsets.move_sets(redis, moved, {"engaged", "sales-ready"}, noted_at=first.as_of + 10**12)
    lanes = redis.smembers(keyspace.person(pid, "segments"))
    assert "sales-ready" in lanes and "engaged" not in lanes
    redis.set(keyspace.SEGMENTS_APPLIED, "lost-track")  # the next run rewrites
    runs.run(redis, config, build_matrix=False)
    assert redis.smembers(keyspace.person(pid, "segments")) == lanes
    assert pid in redis.smembers(keyspace.segment("sales-ready", "members"))
    assert pid not in redis.smembers(keyspace.segment("engaged", "members"))
    others = pl.col("person_id") != pid
    assert_frame_equal(_person_sets(redis).filter(others), _members(config).filter(others))


def test_the_live_lane_ticks_at_most_every_tick_gap_and_loses_no_person(redis, config, monkeypatch):
    """The worker hands rows over after every batch (hundreds a second under a pixel's
    load); a tick per hand-over cost the worker's process about 15 µs a hit (a lock,
    the log listed, the index and the segments read each time). Ticks start at least
    TICK_GAP apart at least; the persons handed over meanwhile are all in the next one."""
    ticks: list[tuple[float, set[str], int]] = []

    def tick(r, cfg, new, persons, *, index=None, unflushed=None):
        ticks.append((time.monotonic(), set(persons), 0 if unflushed is None else len(unflushed)))
        return live.LiveResult(tuple(sorted(persons)), 0, 0.0)

    monkeypatch.setattr(schedule, "live_tick", tick)
    monkeypatch.setattr(results, "latest_run", lambda cfg: {"matrix": {"files": []}})
    redis.sadd(keyspace.SEGMENTS, "engaged")  # a segment to evaluate (its text: not read)
    feed, stop = LiveFeed(), threading.Event()
    lane = threading.Thread(target=schedule.run_live_lane, args=(redis, config, stop, feed))
    begun = time.monotonic()
    lane.start()
    handed = []
    try:
        buffer = feed.number()
        for i in range(120):  # about 0.6 s of hand-overs, one every 5 ms
            pid = f"p-{i}"
            feed.taken(buffer, [event_row(make_hit(uid=f"c-{i}"), pid)])
            handed.append(pid)
            time.sleep(0.005)
        wait_for(lambda: set(handed) <= set().union(*(t[1] for t in ticks)), 10, "every person")
        ended = time.monotonic()
    finally:
        stop.set()
        feed.woken.set()
        lane.join(10)
    # Ticks (one per hand-over before: about 120) started TICK_GAP apart at least.
    assert 2 <= len([t for t in ticks if t[0] <= ended]) <= (ended - begun) / schedule.TICK_GAP + 1
    assert ticks[-1][2] == 120  # every row not flushed yet, in the table the tick reads


def test_the_live_lane_without_a_segment_takes_no_lock_and_makes_no_table(
    redis, config, monkeypatch
):
    """Nothing to evaluate: the lane's ticks neither lock, index the log nor convert the
    rows handed over (a tick would come to nothing); once a segment is stored, it ticks
    for the persons handed over from then on."""
    ticks: list[set[str]] = []
    monkeypatch.setattr(
        schedule,
        "live_tick",
        lambda r, c, n, persons, **_: (
            ticks.append(set(persons)) or live.LiveResult(tuple(persons), 0, 0.0)
        ),
    )
    monkeypatch.setattr(results, "latest_run", lambda cfg: {"matrix": {"files": []}})
    locked = []
    real_lock = lookupsets.sets_lock
    monkeypatch.setattr(lookupsets, "sets_lock", lambda *a: locked.append(1) or real_lock(*a))
    feed, stop = LiveFeed(), threading.Event()
    lane = threading.Thread(target=schedule.run_live_lane, args=(redis, config, stop, feed))
    lane.start()
    try:
        buffer = feed.number()
        feed.taken(buffer, [event_row(make_hit(uid="c-1"), "p-1")])
        wait_for(lambda: not feed.woken.is_set(), 10, "the lane")  # it took the rows
        time.sleep(3 * schedule.TICK_GAP)  # a tick there would have been by now
        assert ticks == [] and locked == []
        redis.sadd(keyspace.SEGMENTS, "engaged")
        feed.taken(buffer, [event_row(make_hit(uid="c-2"), "p-2")])
        wait_for(lambda: ticks, 10, "a tick")
    finally:
        stop.set()
        feed.woken.set()
        lane.join(10)
    assert ticks == [{"p-2"}] and locked
