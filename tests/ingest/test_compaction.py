"""Compaction: small event files merged with every row kept once, erased rows gone from
every Parquet file, retention, anonymous expiry, concurrent flushes, builds after it,
crashes mid-way, the worker's schedule and `dmp compact`."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from dmp.cli import cli, main
from dmp.ingest import compaction, erasures, swaps
from dmp.ingest.eventlog import scan_events
from dmp.ingest.worker import Worker
from dmp.matrix import builds, snapshots
from dmp.membership import results, runs
from dmp.people.identity import Identifier, IdKind
from dmp.people.profiles import find_person
from dmp.privacy import requests
from dmp.storage import keyspace, locks
from segments.personkey import person_id_of
from segments.scoring import DAY_MS
from tests.factories import (
    GOOGLEBOT,
    NOW,
    apply_segments,
    make_hit,
    make_identify,
    run_synth,
    send_hits,
)

SEGMENTS = """
id: active
name: Active this month
where: {did: {event: page, within_days: 30}}
---
id: known
name: Known people
where: {tier: {gte: medium}}
"""


@pytest.fixture
def small(config):
    """Return the test config with a flush every 20 events: many small files."""
    return dataclasses.replace(config, read_count=20, flush_events=20)


def ingest(redis, cfg, hits) -> None:
    """Put hits on the stream and ingest them all, a small file per 20."""
    for start in range(0, len(hits), 500):
        send_hits(redis, *hits[start : start + 500])
    Worker(redis, cfg).run(once=True)


def spread(n: int, days: int = 3, **fields) -> list:
    """Return ``n`` page views on ``days`` days before NOW, by 50 cookies."""
    return [
        make_hit(uid=f"c{i % 50}", timestamp=NOW - (i % days) * DAY_MS - i, **fields)
        for i in range(n)
    ]


def event_ids(cfg) -> list[str]:
    return sorted(scan_events(cfg.events_dir).collect()["event_id"].to_list())


def files_by_day(cfg) -> dict[str, int]:
    out: dict[str, int] = {}
    for path in cfg.events_dir.glob("dt=*/part-*.parquet"):
        out[path.parent.name] = out.get(path.parent.name, 0) + 1
    return out


def test_merge_keeps_every_row_exactly_once(redis, small):
    """Sixty small files over three days become one a day, with the same event ids."""
    ingest(redis, small, spread(1200))
    before = event_ids(small)
    assert len(before) == 1200 and sum(files_by_day(small).values()) >= 60
    report = compaction.compact(redis, small)
    assert event_ids(small) == before
    assert (
        files_by_day(small) == {d: 1 for d in files_by_day(small)} and len(files_by_day(small)) == 3
    )
    assert report.files_before >= 60 and report.files_after == 3
    assert report.rows_erased == report.rows_retired == 0
    assert report.bytes_after < report.bytes_before
    names = [p.name for p in small.events_dir.glob("dt=*/*")]
    assert all(swaps.MARK in n for n in names), names  # no temporary file or journal left
    assert not swaps.journal_path(small.events_dir).exists()
    again = compaction.compact(redis, small)  # nothing left to do: nothing rewritten
    assert again.files_before == again.files_after == 3
    assert sorted(p.name for p in small.events_dir.glob("dt=*/*")) == sorted(names)


def test_a_day_is_packed_into_files_of_about_the_target_size(redis, small):
    """With a small target, a day's files become several files, none much over it."""
    ingest(redis, small, spread(1200, days=1))
    sizes = [p.stat().st_size for p in small.events_dir.glob("dt=*/*.parquet")]
    target = 6 * max(sizes)
    compaction.compact(redis, small, target_bytes=target)
    after = list(small.events_dir.glob("dt=*/*.parquet"))
    assert 1 < len(after) < len(sizes) and len(event_ids(small)) == 1200
    assert all(pq.ParquetFile(p).metadata.num_rows <= 6 * 20 for p in after)


def _all_person_ids(cfg) -> dict[str, set[str]]:
    """Return the person ids in every Parquet file under the data dir, by file (those of
    files keeping persons by key, segments.personkey, as ids)."""
    out = {}
    for path in sorted(cfg.data_dir.rglob("*.parquet")):
        table = pq.ParquetFile(path).read()
        if "person_id" in table.column_names:
            out[str(path.relative_to(cfg.data_dir))] = set(table["person_id"].to_pylist())
        elif "person_key" in table.column_names:
            keys = table["person_key"].to_pylist()
            out[str(path.relative_to(cfg.data_dir))] = {person_id_of(k) for k in keys}
    return out


def _kind(name: str) -> str:
    """Return what kind of file a data-dir file is: part, matrix, state, members, …"""
    stem = Path(name).name.removesuffix(".parquet")
    return stem.rsplit(".", 1)[1] if "." in stem else stem.split("-")[0]


def test_an_erasure_names_keyed_rows_of_dmp_ids_only():
    """person:<pid> names the rows keyed by its number only for an id dmp mints: another
    spelling of the same number (capitals) must not drop that person's keyed rows."""
    members = ["person:00000000000000ab", "person:00000000000000CD", "person:p1", "uid:c-1"]
    found = erasures.parse_members(members)
    assert found.values["person_key"] == {0xAB}
    assert found.values["person_id"] == {"00000000000000ab", "00000000000000CD", "p1"}
    table = pa.table({"person_key": pa.array([0xAB, 0xCD, 7], pa.uint64())})
    assert erasures.drop_mask(table, found).to_pylist() == [True, False, False]


def test_an_erased_person_leaves_every_kind_of_file(runner, redis, config):
    """person:<pid> drops their rows from the event log, the matrix snapshot, state and
    history, and the segment run's members, counts and changes; only theirs."""
    run_synth(runner, 40, 10, 5)
    apply_segments(redis, SEGMENTS)
    runs.run(redis, config, full=True)
    before = _all_person_ids(config)
    every = {"part", "matrix", "state", "history", "members", "counts", "changes"}
    everywhere = [
        pid
        for pid in sorted(set().union(*before.values()) - {None})
        if {_kind(f) for f, ids in before.items() if pid in ids} == every
    ]
    assert everywhere, "no person is in every kind of file"
    pid = everywhere[0]
    rows_before = scan_events(config.events_dir).collect()
    written = {p: p.stat().st_mtime_ns for p in snapshots.matrix_dir(config).iterdir()}
    redis.sadd(keyspace.ERASURE_PENDING, f"person:{pid}")
    report = compaction.compact(redis, config)
    # Rewritten files keep their times: snapshots and runs are pruned oldest-written first.
    assert {p: p.stat().st_mtime_ns for p in written} == written
    after = _all_person_ids(config)
    assert not [f for f, ids in after.items() if pid in ids]
    assert {f: ids - {pid} for f, ids in before.items() if "events" not in f} == {
        f: ids for f, ids in after.items() if "events" not in f
    }
    rows_after = scan_events(config.events_dir).collect()
    theirs = rows_before.filter(pl.col("person_id") == pid).height
    assert rows_after.height == rows_before.height - theirs and theirs > 0
    assert report.rows_erased > theirs and report.files_rewritten >= 5
    assert redis.scard(keyspace.ERASURE_PENDING) == 0 and report.erasures_handled == 1


def test_after_dmp_forget_and_a_compaction_no_file_holds_the_person(redis, config, drain):
    """The whole path: an erasure (two merged browsers, a segment) queued with the worker,
    then a compaction: no Parquet file holds a row of any of her ids or cookies."""
    send_hits(redis, make_hit(uid="c-erika-1"), make_hit(uid="c-erika-2"))
    drain()
    send_hits(redis, make_identify("erika@acme.de", uid="c-erika-1"))
    send_hits(redis, make_identify("erika@acme.de", uid="c-erika-2"), make_hit(uid="c-x"))
    drain()
    apply_segments(redis, SEGMENTS)
    runs.run(redis, config)
    erika = find_person(redis, Identifier(IdKind.EMAIL, "erika@acme.de"))
    ids = {erika, *redis.smembers(keyspace.person(erika, "merged"))}
    assert len(ids) == 2
    report = requests.run(redis, config, requests.request_erasure(redis, erika), wait=30)
    assert report is not None and report["found"]
    assert any(ids & found for found in _all_person_ids(config).values())
    compaction.compact(redis, config)
    assert not [f for f, found in _all_person_ids(config).items() if ids & found]
    uids = set(scan_events(config.events_dir).collect()["uid"].to_list())
    assert uids == {"c-x"} and redis.scard(keyspace.ERASURE_PENDING) == 0


def test_identifier_members_drop_the_event_rows_carrying_them(redis, small):
    """uid:, anon: and user: members drop the event rows with that cookie, anonymousId
    or userId (also rows without a person); others stay, unknown kinds count as done."""
    hits = [
        make_hit(uid="gone"),
        make_hit(uid="gone", user_agent=GOOGLEBOT),  # a bot: stored without a person
        make_hit(uid="kept", anonymous_id="a-gone", source="api"),
        make_hit(uid="kept2", user_id="u-gone", source="api"),
        make_hit(uid="kept3"),
    ]
    ingest(redis, small, hits)
    assert scan_events(small.events_dir).collect()["person_id"].null_count() == 1
    members = ["uid:gone", "anon:a-gone", "user:u-gone", "email:x@acme.de"]
    redis.sadd(keyspace.ERASURE_PENDING, *members)
    report = compaction.compact(redis, small)
    log = scan_events(small.events_dir).collect()
    assert sorted(log["uid"].to_list()) == ["kept3"]
    assert report.rows_erased == 4 and report.erasures_handled == 4
    assert redis.scard(keyspace.ERASURE_PENDING) == 0


def test_only_the_members_it_read_leave_the_pending_set(redis, small, monkeypatch):
    """A member added during a compaction stays, and so does one whose rows arrive in a
    file flushed after the log was listed; the rest are removed."""
    ingest(redis, small, [make_hit(uid="early"), make_hit(uid="plain")])
    redis.sadd(keyspace.ERASURE_PENDING, "uid:early", "uid:late")
    plan = compaction._plan

    def meanwhile(*args):
        redis.sadd(keyspace.ERASURE_PENDING, "uid:added")
        ingest(redis, small, [make_hit(uid="late")])  # a flush after the listing
        return plan(*args)

    monkeypatch.setattr(compaction, "_plan", meanwhile)
    report = compaction.compact(redis, small)
    assert redis.smembers(keyspace.ERASURE_PENDING) == {"uid:added", "uid:late"}
    assert report.erasures_handled == 1 and report.erasures_left == 1
    monkeypatch.setattr(compaction, "_plan", plan)
    compaction.compact(redis, small)
    assert sorted(scan_events(small.events_dir).collect()["uid"].to_list()) == ["plain"]
    assert redis.scard(keyspace.ERASURE_PENDING) == 0


def test_a_file_of_an_uncommitted_flush_is_left_alone(redis, small):
    """A file an open flush intent names is neither merged nor removed."""
    ingest(redis, small, spread(100, days=1))
    open_file = sorted(small.events_dir.glob("dt=*/part-*.parquet"))[0]
    redis.set(keyspace.partition(0).intent("x"), json.dumps({"files": [str(open_file)]}))
    redis.sadd(keyspace.partition(0).intents, "x")
    compaction.compact(redis, small)
    assert open_file.exists()
    assert sorted(p.name for p in open_file.parent.iterdir()) == sorted(
        [open_file.name, next(p.name for p in open_file.parent.iterdir() if swaps.MARK in p.name)]
    )
    assert len(event_ids(small)) == 100


def test_retention_removes_old_days_but_aggregates_stay(redis, small):
    """Day partitions older than retain_events_days go whole; the aggregate counts and
    the event counters stay."""
    old = NOW - 400 * DAY_MS
    hits = [make_hit(uid=f"o{i}", timestamp=old) for i in range(30)]
    hits += [make_hit(timestamp=old, consent={}) for _ in range(5)]  # aggregate only
    hits += [make_hit(uid=f"n{i}") for i in range(30)]
    ingest(redis, small, hits)
    aggregates = {
        k: redis.hgetall(k) for k in redis.scan_iter(keyspace.partition(0).aggregate("*", "*"))
    }
    stats = redis.hgetall(keyspace.partition(0).stats)
    assert aggregates and len(files_by_day(small)) == 2
    report = compaction.compact(redis, small, now_ms=NOW)
    assert list(files_by_day(small)) == [f"dt={_day(NOW)}"]
    assert not (small.events_dir / f"dt={_day(old)}").exists()
    assert report.days_removed == 1 and report.rows_retired == 30
    assert {
        k: redis.hgetall(k) for k in redis.scan_iter(keyspace.partition(0).aggregate("*", "*"))
    } == aggregates
    events = {k: v for k, v in stats.items() if k.startswith("events_")}
    assert {
        k: v for k, v in redis.hgetall(keyspace.partition(0).stats).items() if k in events
    } == events
    assert report.persons_expired == 30  # the old days' cookies, unseen for 400 days
    kept = compaction.compact(redis, dataclasses.replace(small, retain_events_days=0), now_ms=NOW)
    assert kept.days_removed == 0


def _day(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms / 1000))


def test_cookie_only_persons_expire_after_retain_anonymous_days(redis, small):
    """A cookie-only person unseen for 90 days leaves Redis (every key, identifier keys,
    segment sets) and their rows leave the files; recent and identified persons stay."""
    old = NOW - 100 * DAY_MS
    hits = [make_hit(uid="stale", timestamp=old), make_hit(uid="fresh", timestamp=NOW)]
    hits += [make_hit(uid="known", timestamp=old), make_hit(uid="stale2", timestamp=old)]
    ingest(redis, small, hits)
    ingest(redis, small, [make_identify_on("known")])
    stale = find_person(redis, Identifier(IdKind.UID, "stale"))
    redis.sadd(keyspace.segment("active", "members"), stale)
    redis.sadd(keyspace.person(stale, "segments"), "active")
    epoch, low = redis.get(keyspace.WORKER_EPOCH), int(redis.hget(keyspace.STATS, "persons:low"))
    report = compaction.compact(redis, small, now_ms=NOW + DAY_MS)
    assert report.persons_expired == 2
    assert find_person(redis, Identifier(IdKind.UID, "stale")) is None
    assert not list(redis.scan_iter(f"*{stale}*"))
    assert not redis.sismember(keyspace.segment("active", "members"), stale)
    for uid in ("fresh", "known"):
        assert find_person(redis, Identifier(IdKind.UID, uid)) is not None
    assert redis.get(keyspace.WORKER_EPOCH) != epoch
    assert int(redis.hget(keyspace.STATS, "persons:low")) == low - 2
    log = scan_events(small.events_dir).collect()
    assert sorted(set(log["uid"].to_list())) == ["fresh", "known"]
    assert redis.scard(keyspace.ERASURE_PENDING) == 0
    off = dataclasses.replace(small, retain_anonymous_days=0)
    assert compaction.compact(redis, off, now_ms=NOW + 999 * DAY_MS).persons_expired == 0


def make_identify_on(uid: str):
    return make_hit(
        uid=uid, source="api", type="identify", event="identify", traits={"email": "k@acme.de"}
    )


def test_a_worker_flushing_during_compactions_loses_nothing(redis, small):
    """Hits ingested by a running worker while compactions run end in the log once each."""
    cfg = dataclasses.replace(small, flush_seconds=0.05)
    sent: list[str] = []
    stop = threading.Event()
    worker = threading.Thread(target=lambda: Worker(redis, cfg).run(stop=stop), daemon=True)
    worker.start()

    def send() -> None:
        for _ in range(30):
            hits = spread(40, days=2)
            sent.extend(h.event_id for h in hits)
            send_hits(redis, *hits)
            time.sleep(0.03)

    sender = threading.Thread(target=send)
    sender.start()
    reports = []
    try:
        while sender.is_alive():
            reports.append(compaction.compact(redis, cfg, wait_seconds=5))
        sender.join()
        reports.append(compaction.compact(redis, cfg, wait_seconds=5))
    finally:
        stop.set()
        worker.join(30)
    Worker(redis, cfg).run(once=True)
    assert event_ids(cfg) == sorted(sent) and len(reports) >= 2
    assert any(r.files_before > r.files_after for r in reports)


def _rows(path) -> pl.DataFrame:
    return pl.read_parquet(path).sort("person_id")


def test_builds_and_runs_after_a_compaction_equal_full_ones(runner, redis, config):
    """After a compaction that merged files and erased rows, an incremental build equals
    a full one at the same time (it sees files gone and builds in full), the next build
    is incremental again, and a run's members equal a full run's."""
    start = run_synth(runner, 60, 12, 7)
    apply_segments(redis, SEGMENTS)
    runs.run(redis, config, full=True)
    send_hits(redis, *(make_hit(uid=f"c-{i}", timestamp=start - DAY_MS) for i in range(30)))
    Worker(redis, dataclasses.replace(config, read_count=5, flush_events=5)).run(once=True)
    some = pl.read_parquet(snapshots.latest_snapshot(config))["person_id"].sort()[3]
    redis.sadd(keyspace.ERASURE_PENDING, f"person:{some}", "uid:c-1")
    report = compaction.compact(redis, config)
    assert report.files_after < report.files_before and report.rows_erased > 0
    folder, backup = snapshots.matrix_dir(config), config.data_dir / "matrix-before"
    shutil.copytree(folder, backup)
    later = start + DAY_MS
    inc = builds.build(redis, config, later, incremental=True)
    assert not json.loads(snapshots.manifest_path(inc.path).read_text())["incremental"]
    incremental = _rows(inc.path)
    shutil.rmtree(folder)
    shutil.copytree(backup, folder)
    full = builds.build(redis, config, later)
    assert_frame_equal(incremental, _rows(full.path))
    again = builds.build(redis, config, later + 1000, incremental=True)
    assert json.loads(snapshots.manifest_path(again.path).read_text())["incremental"]
    run = runs.run(redis, config)
    members = results.latest_members(config).collect().sort("segment_id", "person_id")
    assert not run.incremental  # the files it counted before are gone: everyone recounted
    runs.run(redis, config, full=True)
    assert_frame_equal(
        members, results.latest_members(config).collect().sort("segment_id", "person_id")
    )


def test_a_crash_before_the_swap_changes_nothing(redis, small, monkeypatch):
    """An exception after the merged files are written (before any rename) leaves the
    log as it was and no temporary file; the next compaction does the work."""
    ingest(redis, small, spread(300))
    before, files = event_ids(small), files_by_day(small)

    def crash(*args):
        raise OSError("disk gone")

    monkeypatch.setattr(swaps, "swap", crash)
    with pytest.raises(OSError):
        compaction.compact(redis, small)
    assert event_ids(small) == before and files_by_day(small) == files
    assert not list(small.events_dir.glob("dt=*/.*"))
    monkeypatch.undo()
    compaction.compact(redis, small)
    assert event_ids(small) == before and set(files_by_day(small).values()) == {1}


@pytest.mark.parametrize("reader", ["compaction", "build"])
def test_a_crash_after_the_first_rename_is_rolled_forward(redis, small, monkeypatch, reader):
    """Killed after the first merged file was renamed in (its inputs still there), the
    log shows rows twice until the next compaction, or the next matrix build, rolls the
    journal forward: then every row is there once."""
    ingest(redis, small, spread(300))
    before = event_ids(small)
    remove = swaps._remove_inputs

    def crash(*args):
        raise KeyboardInterrupt  # as a kill: nothing after it runs

    monkeypatch.setattr(swaps, "_remove_inputs", crash)
    with pytest.raises(KeyboardInterrupt):
        compaction.compact(redis, small)
    assert swaps.journal_path(small.events_dir).exists()
    assert len(event_ids(small)) > len(before)  # the first day's rows twice, for now
    monkeypatch.setattr(swaps, "_remove_inputs", remove)
    if reader == "compaction":
        report = compaction.compact(redis, small)
        assert report.recovered == 3 and report.files_after == 3
    else:
        builds.build(redis, small, NOW + DAY_MS)
        assert not swaps.journal_path(small.events_dir).exists()
    assert event_ids(small) == before


def test_one_compaction_at_a_time(redis, small):
    """While another holds the compaction lock, a compaction refuses (Busy)."""
    other = locks.Lease(redis, keyspace.COMPACTION_LOCK, 30)
    assert other.take()
    with pytest.raises(locks.Busy):
        compaction.compact(redis, small)
    other.release()
    compaction.compact(redis, small)


def test_the_worker_schedule_compacts_when_due(redis, small):
    """The schedule's first look only notes the time; once compact_every_hours have
    passed since, it compacts (and records the report)."""
    ingest(redis, small, spread(200))
    cfg = dataclasses.replace(small, compact_every_hours=1 / 3600)  # a second
    stop = threading.Event()
    thread = compaction.start_schedule(redis, cfg, stop)
    assert thread is not None
    try:
        deadline = time.monotonic() + 30
        while "files_after" not in json.loads(redis.get(keyspace.COMPACTION_LAST) or "{}"):
            assert time.monotonic() < deadline, "no compaction within 30 s"
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(10)
    assert set(files_by_day(small).values()) == {1}
    assert (
        compaction.start_schedule(redis, dataclasses.replace(cfg, compact_every_hours=0), stop)
        is None
    )


# -- the CLI ------------------------------------------------------------------------------


def test_cli_compact_json(runner, redis, small):
    """`dmp compact --json` prints the report."""
    ingest(redis, small, spread(200))
    result = runner.invoke(cli, ["compact", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["files_after"] == 3 and report["files_before"] > 3


def test_cli_compact_text_and_help(runner, redis, small):
    """Without --json it prints one line of what it did; --help says what it does."""
    ingest(redis, small, spread(100))
    result = runner.invoke(cli, ["compact"])
    assert result.exit_code == 0 and "event files" in result.output
    help_text = runner.invoke(cli, ["compact", "--help"]).output
    assert "DMP_RETAIN_EVENTS_DAYS" in help_text and "--json" in help_text


def test_cli_compact_bad_input_exits_2(main_argv, capsys):
    """A bad option value exits 2 with one line on stderr."""
    with pytest.raises(SystemExit) as stop:
        main([*main_argv, "compact", "--target-mb", "0"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("dmp: error:") and err.count("\n") == 1


def test_cli_compact_busy_exits_1(runner, redis):
    """Another compaction under way: exit 1 and say so."""
    assert locks.Lease(redis, keyspace.COMPACTION_LOCK, 30).take()
    result = runner.invoke(cli, ["compact"])
    assert result.exit_code == 1 and "another compaction" in result.output
