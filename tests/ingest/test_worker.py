"""The ingest worker: identity, tiers, merges, dedup and the exactly-once event log."""

from __future__ import annotations

import json
import os

import polars as pl
import pytest

from dmp.ingest import stream
from dmp.ingest.eventlog import EventLog, scan_events
from dmp.ingest.worker import Worker, status
from dmp.people import profiles
from dmp.people.identity import Identifier, IdKind
from dmp.records import Hit
from dmp.storage import keyspace, metrics
from tests.factories import NOW, consent_of, make_hit, make_identify, person_of, send_hits


def rows(config) -> pl.DataFrame:
    """Return the Parquet event log."""
    return scan_events(config.events_dir).collect()


def test_consented_pixel_hit_makes_a_low_person(redis, config, drain):
    """A consented cookie hit creates a low person with the page in its timeline."""
    send_hits(redis, make_hit(uid="c1", title="Produkte"))
    drain()
    person = person_of(redis, IdKind.UID, "c1")
    assert person["tier"] == "low"
    assert person["identifiers"] == {"uid": ["c1"]}
    assert consent_of(person, "analytics")["granted"] is True
    assert consent_of(person, "email")["granted"] is False
    events = [t["event"] for t in person["touchpoints"]]
    assert events == ["tier_promoted", "page"] or events == ["page", "tier_promoted"]
    assert status(redis)["persons"] == {"low": 1, "medium": 0, "high": 0}
    log = rows(config)
    assert log.height == 1 and log["person_id"][0] == person["person_id"]
    assert log["browser"][0] == "Chrome" and log["device"][0] == "desktop"
    assert str(log["dt"][0]) == "2026-09-21"


def test_tiers_climb_low_medium_high_with_promotion_touchpoints(redis, drain):
    """Cookie → email → phone climbs low, medium, high; each promotion is a touchpoint."""
    send_hits(redis, make_hit(uid="c1", timestamp=NOW))
    drain()
    send_hits(redis, make_identify("anna@acme.de", uid="c1"))
    drain()
    assert person_of(redis, IdKind.UID, "c1")["tier"] == "medium"
    send_hits(redis, make_identify("anna@acme.de", phone="+49 171 1234567"))
    drain()
    person = person_of(redis, IdKind.EMAIL, "anna@acme.de")
    assert person["tier"] == "high"
    promotions = [(t["from"], t["to"]) for t in person["touchpoints"] if t["type"] == "tier"]
    assert sorted(promotions) == [("low", "medium"), ("medium", "high"), ("unknown", "low")]
    assert status(redis)["persons"] == {"low": 0, "medium": 0, "high": 1}


@pytest.mark.parametrize(
    "traits",
    [
        {"address": {"street": "Hauptstr. 1", "postalCode": "50667", "city": "Köln"}},
        {"crm_id": "0035e00000AbCdE"},
    ],
)
def test_email_plus_address_or_crm_record_is_high(redis, drain, traits):
    """An email with a postal address or a CRM record id makes a person high."""
    send_hits(redis, make_identify("b@acme.de", **traits))
    drain()
    assert person_of(redis, IdKind.EMAIL, "b@acme.de")["tier"] == "high"


def test_cookie_person_merges_into_email_owner_keeping_history(redis, drain):
    """An anonymous cookie person identifying with a known email merges into its owner."""
    send_hits(redis, make_identify("anna@acme.de"))
    drain()
    owner = person_of(redis, IdKind.EMAIL, "anna@acme.de")["person_id"]
    send_hits(redis, make_hit(uid="c9", url="https://acme.de/whitepaper", timestamp=NOW - 5000))
    drain()
    cookie_person = person_of(redis, IdKind.UID, "c9")["person_id"]
    assert cookie_person != owner
    link = make_identify("ANNA@acme.de", uid="c9")
    send_hits(redis, link)
    drain()
    merged = person_of(redis, IdKind.UID, "c9")
    assert merged["person_id"] == owner
    assert merged["first_seen"].startswith("2026-09-21")
    assert "https://acme.de/whitepaper" in [t.get("url") for t in merged["touchpoints"]]
    assert sorted(merged["identifiers"]) == ["email", "uid", "user"]
    assert profiles.get_person(redis, cookie_person)["person_id"] == owner  # old id leads on
    (entry_id, entry), *_ = redis.xrange(keyspace.MERGES)
    assert entry["from"] == cookie_person and entry["into"] == owner
    assert entry["event_id"] == link.event_id and entry["reason"] and entry["at"]
    assert status(redis)["persons"] == {"low": 0, "medium": 1, "high": 0}


def test_merge_within_one_batch(redis, drain):
    """Persons created and linked inside one read batch end up as one person."""
    send_hits(redis, make_hit(uid="c1"), make_hit(uid="c2"), make_identify("x@acme.de", uid="c1"))
    send_hits(redis, make_identify("x@acme.de", uid="c2"))
    drain()
    a, b = person_of(redis, IdKind.UID, "c1"), person_of(redis, IdKind.UID, "c2")
    assert a["person_id"] == b["person_id"] and a["tier"] == "medium"
    assert status(redis)["persons"] == {"low": 0, "medium": 1, "high": 0}


def test_two_emails_on_one_cookie_are_not_merged(redis, drain):
    """A shared browser used by two known people records a conflict instead of merging."""
    send_hits(redis, make_identify("anna@acme.de", uid="shared"))
    drain()
    send_hits(redis, make_identify("ben@acme.de", uid="shared"))
    drain()
    anna = person_of(redis, IdKind.EMAIL, "anna@acme.de")
    ben = person_of(redis, IdKind.EMAIL, "ben@acme.de")
    assert anna["person_id"] != ben["person_id"]
    assert anna["identifiers"]["uid"] == ["shared"] and "uid" not in ben["identifiers"]
    (_, conflict), *_ = redis.xrange(keyspace.CONFLICTS)
    assert {conflict["person_id"], conflict["other_id"]} == {anna["person_id"], ben["person_id"]}
    assert "different emails" in conflict["reason"]
    assert redis.xlen(keyspace.MERGES) == 0


def test_unconsented_hits_count_only_in_aggregate(redis, config, drain):
    """Hits without analytics consent make no person and no row; aggregates count them."""
    send_hits(redis, make_hit(consent={"analytics": False}, topics=["crm", "erp"]))
    send_hits(redis, make_hit(source="api", user_id="u1", consent={"analytics": False}))
    drain()
    day = keyspace.partition(0).aggregate("acme-gmbh", "20260921")
    counts = redis.hgetall(day)
    assert counts["hits"] == "2" and counts["url:https://acme.de/produkte"] == "2"
    assert counts["topic:erp"] == "1" and counts["device:desktop"] == "2"
    assert status(redis)["events_aggregate"] == 2 and status(redis)["events_stored"] == 0
    assert not rows(config).height
    assert not redis.keys("dmp:person:*") and not redis.keys("dmp:id:*")


def test_bots_are_flagged_and_never_become_persons(redis, config, drain):
    """A consented bot hit is stored flagged is_bot, without a person."""
    send_hits(
        redis, make_hit(uid="b1", user_agent="Googlebot/2.1 (+http://www.google.com/bot.html)")
    )
    drain()
    log = rows(config)
    assert log["is_bot"].to_list() == [True] and log["person_id"].to_list() == [None]
    assert profiles.find_person(redis, Identifier(IdKind.UID, "b1")) is None


def test_replayed_event_ids_are_stored_once(redis, config, drain):
    """The same event id in one batch, in a later batch and after a flush is one row."""
    first = make_hit(uid="c1", event_id="evt-0001")
    send_hits(redis, first, first)
    drain()
    send_hits(redis, first)
    drain()
    assert rows(config)["event_id"].to_list() == ["evt-0001"]
    assert status(redis)["events_stored"] == 1
    assert len(person_of(redis, IdKind.UID, "c1")["touchpoints"]) == 2  # page + promotion
    assert redis.xlen(keyspace.partition(0).stream) == 0


def test_same_event_id_on_two_sites_is_two_events(redis, config, drain):
    """Event ids are unique per site, so two sites may reuse one."""
    send_hits(
        redis,
        make_hit(uid="c1", event_id="evt-1"),
        make_hit(uid="c1", event_id="evt-1", site_id="other"),
    )
    drain()
    assert rows(config).height == 2


def test_events_partition_by_utc_day(redis, config, drain):
    """One flush spanning two days writes one file per day partition."""
    send_hits(
        redis, make_hit(uid="c1", timestamp=NOW), make_hit(uid="c1", timestamp=NOW + 86_400_000)
    )
    drain()
    parts = sorted(p.parent.name for p in config.events_dir.glob("dt=*/part-*.parquet"))
    assert parts == ["dt=2026-09-21", "dt=2026-09-22"]
    assert not list(config.events_dir.rglob(".*.tmp"))


def test_crash_after_files_before_commit_is_finished_on_restart(redis, config, monkeypatch):
    """Files written but not committed: the restarted worker commits them, no duplicates."""
    send_hits(redis, *(make_hit(uid=f"c{i}") for i in range(5)))
    crashing = Worker(redis, config)

    def crash(self, name, payload):
        raise RuntimeError("power cut")

    monkeypatch.setattr(EventLog, "_commit", crash)
    with pytest.raises(RuntimeError):
        crashing.run(once=True)
    monkeypatch.undo()
    assert redis.scard(keyspace.partition(0).intents) == 1
    redis.delete(keyspace.partition(0).lease)  # the crashed worker's lease would expire on its own
    Worker(redis, config).run(once=True)
    assert rows(config).height == 5
    assert status(redis)["events_stored"] == 5 and status(redis)["pending"] == 0
    assert redis.scard(keyspace.partition(0).intents) == 0


def test_crash_before_rename_rereads_the_events(redis, config, monkeypatch):
    """A flush that died before its files were in place is undone and its events re-read."""
    send_hits(redis, *(make_hit(uid=f"c{i}") for i in range(3)))

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        Worker(redis, config).run(once=True)
    monkeypatch.undo()
    redis.delete(keyspace.partition(0).lease)
    Worker(redis, config).run(once=True)
    assert sorted(rows(config)["uid"].to_list()) == ["c0", "c1", "c2"]
    assert status(redis)["persons"]["low"] == 3
    assert not list(config.events_dir.rglob(".*.tmp"))


def test_unreadable_stream_entries_are_acked_and_counted(redis, config, drain):
    """A corrupt stream entry is dropped (counted), and the rest of its batch is stored."""
    redis.xadd(keyspace.partition(0).stream, {stream.FIELD: "{not json"})
    redis.xadd(keyspace.partition(0).stream, {"other": "x"})
    send_hits(redis, make_hit(uid="c1"))
    drain()
    assert rows(config).height == 1 and redis.xlen(keyspace.partition(0).stream) == 0
    assert metrics.read_counter(redis, "dmp_stream_unreadable_total") == 2


def test_worker_takes_over_entries_a_dead_consumer_left(redis, config, drain):
    """Entries read but never acked by a vanished consumer are ingested by the next worker."""
    stream.ensure_group(redis)
    send_hits(redis, make_hit(uid="c1"), make_hit(uid="c2"))
    redis.xreadgroup(keyspace.GROUP, "dead-worker", {keyspace.partition(0).stream: ">"}, 10)
    drain()
    assert rows(config).height == 2
    assert redis.xpending(keyspace.partition(0).stream, keyspace.GROUP)["pending"] == 0


def test_once_returns_when_another_worker_holds_the_lease_and_nothing_waits(redis, config):
    """`worker --once` beside a running worker waits for the stream to drain, not for the lease."""
    redis.set(keyspace.partition(0).lease, "someone-else", px=60_000)
    assert Worker(redis, config).run(once=True) == 0


def test_two_workers_on_one_host_never_hold_the_lease_together(redis, config):
    """The lease names the worker instance: a second worker with the same consumer name
    (dmp serve's beside `dmp worker --once`) waits instead of writing too."""
    first, second = Worker(redis, config), Worker(redis, config)
    assert first.consumer == second.consumer
    assert first.acquire_lease() and not second.acquire_lease()
    first.release_lease()
    assert second.acquire_lease() and not first.acquire_lease()


def test_timeline_is_capped_but_the_log_keeps_everything(redis, config, drain):
    """Redis keeps the newest touchpoints up to the cap; Parquet keeps every event."""
    capped = config.__class__(**{**_fields(config), "timeline_cap": 5})
    send_hits(redis, *(make_hit(uid="c1", timestamp=NOW + i) for i in range(12)))
    Worker(redis, capped).run(once=True)
    person = person_of(redis, IdKind.UID, "c1")
    assert person["touchpoints_total"] == 5
    assert rows(config).height == 12


def test_withdrawn_consent_unlinks_the_cookie(redis, drain):
    """A consent withdrawal unlinks the cookie and drops a cookie-only person to unknown."""
    send_hits(redis, make_hit(uid="c1"))
    drain()
    pid = person_of(redis, IdKind.UID, "c1")["person_id"]
    withdrawal = make_hit(
        type="consent",
        event="consent_withdrawn",
        uid="c1",
        timestamp=NOW + 1000,
        consent={"analytics": False, "ads": False, "email": False},
    )
    send_hits(redis, withdrawal)
    drain()
    assert profiles.find_person(redis, Identifier(IdKind.UID, "c1")) is None
    person = profiles.get_person(redis, pid)
    assert person["tier"] == "unknown" and consent_of(person, "analytics")["granted"] is False
    assert person["touchpoints"][0]["event"] == "consent_withdrawn"
    assert status(redis)["persons"]["low"] == 0


def test_traits_and_consent_proof_are_kept(redis, drain):
    """Traits are stored as given; each consent change keeps when, where and by which event."""
    ident = make_identify(
        "c@acme.de", firstName="Clara", company={"name": "Acme", "employees": 250}
    )
    send_hits(redis, ident)
    drain()
    person = person_of(redis, IdKind.EMAIL, "c@acme.de")
    assert person["traits"]["company"] == {"name": "Acme", "employees": 250}
    assert person["consents"] == {}  # a server-side event without consent grants nothing
    granted = make_hit(
        source="api",
        type="track",
        event="Newsletter Subscribed",
        user_id="user-c@acme.de",
        consent={"email": True},
        trusted=True,
    )
    send_hits(redis, granted)
    drain()
    proof = consent_of(person_of(redis, IdKind.EMAIL, "c@acme.de"), "email")
    assert proof["granted"] is True and proof["event_id"] == granted.event_id
    assert proof["source"] == "api" and proof["at"].startswith("2026-09-21")


def _fields(config) -> dict:
    return {name: getattr(config, name) for name in config.__slots__}


def test_person_json_round_trips(redis, drain):
    """The admin view is plain JSON."""
    send_hits(redis, make_identify("d@acme.de", uid="c4"))
    drain()
    person = person_of(redis, IdKind.EMAIL, "d@acme.de")
    assert json.loads(json.dumps(person)) == person


@pytest.mark.parametrize("form", ["array", "object"])
@pytest.mark.parametrize(
    "bad", [{"timestamp": 10**19}, {"timestamp": -5}, {"received_at": 1.5}, {"event_id": ""}]
)
def test_an_unstorable_entry_cannot_block_the_stream(redis, config, drain, bad, form):
    """A stream entry with an impossible time or no id is dropped, the rest stored."""
    broken = make_hit(uid="c0")._replace(**bad)
    entry = broken.to_json() if form == "array" else json.dumps(broken._asdict(), default=dict)
    redis.xadd(keyspace.partition(0).stream, {stream.FIELD: entry})
    send_hits(redis, make_hit(uid="c1"))
    drain()
    assert rows(config)["uid"].to_list() == ["c1"] and redis.xlen(keyspace.partition(0).stream) == 0
    assert metrics.read_counter(redis, "dmp_stream_unreadable_total") == 1


def test_alias_and_group_ids_reach_the_log(redis, config, drain):
    """An alias keeps its previousId and a group call its groupId in the event log."""
    send_hits(
        redis,
        make_hit(source="api", type="alias", event="alias", user_id="u-new", previous_id="u-old"),
        make_hit(source="api", type="group", event="group", user_id="u-new", group_id="acme"),
    )
    drain()
    log = rows(config).sort("type")
    assert log.select("type", "previous_id", "group_id").rows() == [
        ("alias", "u-old", None),
        ("group", None, "acme"),
    ]


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"url": "", "title": "", "topics": ()},
        {"title": 'Preise & "Pakete" — Übersicht\n\t\\', "topics": ["ki", "datenschutz", "ü"]},
        {"url": "https://acme.de/ü?q=\u2028\x00", "channel": "server", "source": "api"},
        {"event": "Demo Requested", "type": "track", "title": "\ud7ff\ue000 emoji 🎉"},
        {"channel": None},  # wrong-typed fields fall back to the encoder
        {"topics": ["crm", 7]},
        {"timestamp": True},
        {"timestamp": 1.5},
    ],
)
def test_touchpoint_member_is_exactly_the_encoders_json(fields) -> None:
    """Timeline members are set members: a replay must produce the very same bytes."""
    from dmp.people.timeline import touchpoint, touchpoint_fields
    from dmp.records import dump_json

    h = make_hit(**fields)
    assert touchpoint(h) == dump_json(touchpoint_fields(h))
    assert json.loads(touchpoint(h))["id"] == h.event_id


def test_stream_entries_are_positional_and_the_object_form_still_reads(redis, config, drain):
    """A hit travels as a JSON array (empty fields at the end left out); entries written
    as objects before that, and hits round-trip either way."""
    full = make_hit(uid="c0", url="https://acme.de/a", topics=["crm"], ip="10.0.0.0")
    text = full._replace(user_agent="").to_json()
    assert json.loads(text)[-1] == "10.0.0.0"  # the empty user_agent after it left out
    assert Hit.from_json(text) == full._replace(user_agent="")
    text = full.to_json()
    assert Hit.from_json(text) == full
    bare = Hit("e1", "s1", "api", "track", "x", 1, 2)
    assert json.loads(bare.to_json())[:7] == list(bare[:7])
    assert Hit.from_json(bare.to_json()) == bare
    old = make_hit(uid="c1")
    redis.xadd(
        keyspace.partition(0).stream, {stream.FIELD: json.dumps(old._asdict(), default=dict)}
    )
    send_hits(redis, full)
    drain()
    assert sorted(rows(config)["uid"].to_list()) == ["c0", "c1"]


@pytest.mark.parametrize(
    "entry", ['"abc"', "[1, 2]", "[" + '"x",' * 30 + "1]", "[]", "null", "{}", '{"uid": "c9"}']
)
def test_a_malformed_entry_is_counted_and_skipped(redis, config, drain, entry):
    """Wrong shapes (too short, too long, not a hit) never become a hit, nor block others."""
    redis.xadd(keyspace.partition(0).stream, {stream.FIELD: entry})
    send_hits(redis, make_hit(uid="c1"))
    drain()
    assert rows(config)["uid"].to_list() == ["c1"] and redis.xlen(keyspace.partition(0).stream) == 0
    assert metrics.read_counter(redis, "dmp_stream_unreadable_total") == 1


def test_a_worker_that_lost_its_lease_stores_nothing_and_the_next_stores_once(redis, config, drain):
    """The commit is fenced by the lease: a stalled worker whose lease passed on abandons its
    flush (files removed, entries unacked), and the new holder stores each event once."""
    send_hits(redis, make_hit(uid="c1"), make_hit(uid="c2"), make_hit(uid="c3"))
    stalled = Worker(redis, config)
    assert stalled.acquire_lease()
    stalled.start()
    assert stalled.step() == 3
    # It stalled past the lease; someone took over.
    redis.set(keyspace.partition(0).lease, "another-worker", px=60_000)
    stalled.flush()
    assert stalled._lost and not list(config.events_dir.glob("dt=*/*.parquet"))
    assert redis.xpending(keyspace.partition(0).stream, keyspace.GROUP)["pending"] == 3
    assert not redis.smembers(keyspace.partition(0).intents)
    redis.delete(keyspace.partition(0).lease)
    drain()
    assert sorted(rows(config)["uid"].to_list()) == ["c1", "c2", "c3"]


def test_an_abandoned_flush_keeps_only_files_a_recovery_committed(redis, config):
    """A flush abandoned after losing the lease removes its files, unless the new holder's
    recovery already finished (committed) that very flush."""
    from dmp.ingest.eventlog import EventLog

    log_ = EventLog(redis, config.events_dir, config.dedup_days)
    for name, outcome, kept in (
        ("f1", "finished", True),
        ("f2", "undone", False),
        ("f3", None, False),
    ):
        path = config.events_dir / "dt=2026-09-21" / f"part-{name}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"PAR1")
        redis.set(keyspace.partition(0).intent(name), "{}")
        redis.sadd(keyspace.partition(0).intents, name)
        if outcome:
            redis.set(keyspace.eventlog_outcome(name), outcome)
        log_._abandon(name, [path])
        assert path.exists() is kept
        if not kept:
            assert not redis.sismember(keyspace.partition(0).intents, name)
            assert not redis.exists(keyspace.partition(0).intent(name))


def test_a_restarted_worker_reads_each_of_its_pending_entries_once(redis, config):
    """A worker killed with a batch read but not flushed leaves its entries pending; the next
    worker under the same consumer name stores each event once and counts no duplicate."""
    send_hits(redis, *(make_hit(uid=f"c{i}") for i in range(5)))
    killed = Worker(redis, config)
    assert killed.acquire_lease()
    killed.start()
    assert killed.step() == 5  # read and buffered, never flushed: then kill -9
    redis.delete(keyspace.partition(0).lease)  # the dead worker's lease would expire on its own
    restarted = Worker(redis, config)
    assert restarted.consumer == killed.consumer
    assert restarted.run(once=True) == 5
    assert sorted(rows(config)["uid"].to_list()) == [f"c{i}" for i in range(5)]
    assert metrics.read_counter(redis, "dmp_events_duplicate_total") == 0
    assert status(redis)["pending"] == 0 and status(redis)["events_stored"] == 5


def test_entries_deleted_while_a_dead_consumer_held_them_are_acked(redis, config, drain):
    """Redis 6.2's XAUTOCLAIM answers a deleted pending entry without its id; the worker
    still takes it over and acks it, so nothing stays pending for good."""
    stream.ensure_group(redis)
    send_hits(redis, make_hit(uid="c1"), make_hit(uid="c2"), make_hit(uid="c3"))
    (_, entries), *_ = redis.xreadgroup(
        keyspace.GROUP, "dead-worker", {keyspace.partition(0).stream: ">"}, 10
    )
    redis.xdel(keyspace.partition(0).stream, entries[1][0])
    drain()
    assert sorted(rows(config)["uid"].to_list()) == ["c1", "c3"]
    assert redis.xpending(keyspace.partition(0).stream, keyspace.GROUP)["pending"] == 0
    assert metrics.read_counter(redis, "dmp_events_duplicate_total") == 0


def test_serve_frees_the_lease_of_a_worker_process_it_saw_die(redis, config):
    """release_dead_lease frees the lease only if the dead process (by pid) held it."""
    from dmp.ingest.worker import release_dead_lease

    holder = Worker(redis, config)
    assert holder.acquire_lease()
    assert release_dead_lease(redis, config.consumer, os.getpid() + 1) is False
    assert release_dead_lease(redis, "other-host-worker", os.getpid()) is False
    assert redis.get(keyspace.partition(0).lease) == holder.lease.token
    assert release_dead_lease(redis, config.consumer, os.getpid()) is True
    assert redis.get(keyspace.partition(0).lease) is None


def test_a_long_running_worker_rides_out_a_redis_away_at_its_start(tmp_path, own_redis):
    """`dmp worker` started while Redis is down waits for it (one log line) and then
    ingests, instead of exiting (dmp serve restarted it in a loop)."""
    import signal
    import subprocess
    import sys
    import time

    from dmp.storage import redisserver

    own_redis.kill()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMP_")}
    env |= {"DMP_REDIS_URL": own_redis.url, "DMP_DATA_DIR": str(tmp_path / "data")}
    env |= {"DMP_FLUSH_SECONDS": "0.2", "DMP_SEGMENTS_EVERY": "0"}
    log_path = tmp_path / "worker.log"
    log_file = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "dmp", "worker"], env=env, stderr=log_file)
    try:
        # Redis comes back only once the worker said it is away (a busy machine may take
        # seconds just to start the worker).
        deadline = time.monotonic() + 60
        while "Redis is unavailable" not in log_path.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, log_path.read_text()
            time.sleep(0.1)
        own_redis.start()
        r = redisserver.connect(own_redis.url)
        send_hits(r, make_hit(event_id="late-start-1", uid="c1"))
        deadline = time.monotonic() + 20
        while status(r)["events_stored"] < 1:
            assert time.monotonic() < deadline and proc.poll() is None, "not ingested"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log_file.close()
    err = log_path.read_text()
    assert proc.returncode == 0, err
    assert err.count("Redis is unavailable") == 1 and "Traceback" not in err, err
