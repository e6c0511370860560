"""Ingest in partitions: routing, the single stream of old, counters summed over partitions."""

from __future__ import annotations

import dataclasses
import threading
import time
import zlib

import pytest

from dmp.ingest import stream
from dmp.ingest.eventlog import scan_events
from dmp.ingest.worker import Worker, status
from dmp.people.identity import IdKind
from dmp.records import Hit
from dmp.storage import keyspace, metrics
from dmp.storage.locks import Lease
from tests.factories import make_hit, make_identify, person_of


def test_routing_is_stable_and_spreads():
    """A hit's partition follows its first identifier (uid, then anonymousId, userId) and
    hits spread over every partition."""
    a = make_hit(uid="cookie-1")
    assert stream.partition_of(a, 4) == stream.partition_of(make_hit(uid="cookie-1"), 4)
    assert stream.partition_of(a, 1) == 0
    seen = {stream.partition_of(make_hit(uid=f"c{i}"), 4) for i in range(200)}
    assert seen == {0, 1, 2, 3}
    # crc32 of the uid: the same in every process (Python's hash() is salted).
    assert stream.partition_of(make_hit(uid="c1"), 4) == zlib.crc32(b"c1") % 4 == 1


def test_legacy_stream_entries_are_drained(redis, config):
    """Entries left on the single stream of earlier versions are stored once by the
    worker of partition 0, and the old totals still count in status."""
    redis.hset(keyspace.STATS, "events_stored", 5)
    redis.xgroup_create(keyspace.STREAM, keyspace.GROUP, id="0", mkstream=True)
    for i in range(3):
        redis.xadd(keyspace.STREAM, {stream.FIELD: make_hit(uid=f"old{i}").to_json()})
    Worker(redis, config).run(once=True)
    assert redis.xlen(keyspace.STREAM) == 0
    assert status(redis)["events_stored"] == 5 + 3


def test_counters_sum_over_partitions(redis, config):
    """Hits spread over four partitions are all stored once; status and the metric
    counters sum what each partition committed."""
    config = dataclasses.replace(config, stream_partitions=4)
    stream.ensure_group(redis, 4)
    hits = [make_hit(uid=f"c{i}") for i in range(40)]
    stream.enqueue(redis, hits + hits[:5], {}, atomic=False, partitions=4)
    lengths = stream.pending_counts(redis)
    assert sum(lengths.values()) == 45 and all(lengths[p] for p in range(4))
    for p in range(4):
        Worker(redis, config, p).run(once=True)
    state = status(redis)
    assert state["events_stored"] == 40 and state["pending"] == 0
    assert [p["partition"] for p in state["partitions"]] == [0, 1, 2, 3]
    assert metrics.read_counter(redis, "dmp_events_duplicate_total") == 5


def _crossing(n: int) -> list[int]:
    """Return ``n`` indexes whose cookie and user id fall on different partitions."""
    found, i = [], 0
    while len(found) < n:
        cookie, user = make_hit(uid=f"c{i}"), make_identify(f"p{i}@acme.de")
        if stream.partition_of(cookie, 4) != stream.partition_of(user, 4):
            found.append(i)
        i += 1
    return found


def _run_partitions_concurrently(redis, config) -> None:
    """Drain all four partitions with two threads of two workers each, at the same time."""

    def drain(parts: list[int]) -> None:
        for p in parts:
            Worker(redis, config, p).run(once=True)

    threads = [threading.Thread(target=drain, args=(parts,)) for parts in ([0, 1], [2, 3])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_cross_partition_identities_end_as_one_person(redis, config):
    """A cookie on one partition and an identify with an email on another, linked later,
    end as one person with every identifier; no merge is doubled and no hit's touchpoint
    goes to a person merged away."""
    config = dataclasses.replace(config, stream_partitions=4, read_count=7)
    stream.ensure_group(redis, 4)
    idx = _crossing(12)
    first = [make_hit(uid=f"c{i}") for i in idx] + [make_identify(f"p{i}@acme.de") for i in idx]
    stream.enqueue(redis, first, {}, atomic=False, partitions=4)
    _run_partitions_concurrently(redis, config)
    links = [make_identify(f"p{i}@acme.de", uid=f"c{i}") for i in idx]
    more = [make_hit(uid=f"c{i}") for i in idx] + [make_identify(f"p{i}@acme.de") for i in idx]
    stream.enqueue(redis, links + more, {}, atomic=False, partitions=4)
    _run_partitions_concurrently(redis, config)
    merges = [e for _, e in redis.xrange(keyspace.MERGES)]
    assert len(merges) == len(idx) and len({m["from"] for m in merges}) == len(idx)
    for i in idx:
        person = person_of(redis, IdKind.UID, f"c{i}")
        assert person["person_id"] == person_of(redis, IdKind.EMAIL, f"p{i}@acme.de")["person_id"]
        assert sorted(person["identifiers"]) == ["email", "uid", "user"]
        # 2 page views, 3 identifies (one the link), 2 tier promotions: all on the survivor.
        assert len(person["touchpoints"]) == 7, person["touchpoints"]
    assert status(redis)["persons"]["medium"] == len(idx)


def test_concurrent_first_sightings_of_one_email_make_one_person(redis, config):
    """Two cookies on different partitions identifying with the same new email at the same
    time end as one person holding both cookies (the workers take turns on identities)."""
    config = dataclasses.replace(config, stream_partitions=4, read_count=1)
    stream.ensure_group(redis, 4)
    pairs, i = [], 0
    while len(pairs) < 40:
        a, b = (
            make_identify(f"x{i}@acme.de", uid=f"a{i}"),
            make_identify(f"x{i}@acme.de", uid=f"b{i}"),
        )
        if {stream.partition_of(a, 4), stream.partition_of(b, 4)} in (
            {0, 2},
            {1, 3},
            {0, 3},
            {1, 2},
        ):
            pairs.append((i, a, b))
        i += 1
    stream.enqueue(redis, [h for _, a, b in pairs for h in (a, b)], {}, atomic=False, partitions=4)
    _run_partitions_concurrently(redis, config)
    for i, _, _ in pairs:
        a, b = person_of(redis, IdKind.UID, f"a{i}"), person_of(redis, IdKind.UID, f"b{i}")
        assert (
            a["person_id"]
            == b["person_id"]
            == person_of(redis, IdKind.EMAIL, f"x{i}@acme.de")["person_id"]
        )
    assert status(redis)["persons"]["medium"] == len(pairs)


def test_two_worker_processes_share_the_partitions(redis, config):
    """Two fleets (worker processes) on four partitions hold two each, never one together,
    and store every event once; when one stops, the other takes its partitions over."""
    from dmp.ingest.fleet import Fleet

    config = dataclasses.replace(config, stream_partitions=4, lease_seconds=3.0)
    one, two = Fleet(redis, config), Fleet(redis, config)
    one.share(), two.share()  # both alive before either takes its share
    one.rebalance(), two.rebalance()
    assert len(one.held) == len(two.held) == 2 and not set(one.held) & set(two.held)
    hits = [make_hit(uid=f"c{i}") for i in range(60)]
    stream.enqueue(redis, hits, {}, atomic=False, partitions=4)
    stop_one = threading.Event()
    runner = threading.Thread(target=one.run, args=(stop_one,))
    runner.start()
    stop_one.set()
    runner.join()  # gave its partitions back
    assert not one.held
    redis.zrem(keyspace.WORKERS, one.name)
    two.rebalance()
    assert sorted(two.held) == [0, 1, 2, 3]
    deadline = time.monotonic() + 60
    while status(redis)["events_stored"] < 60 and time.monotonic() < deadline:
        time.sleep(0.1)
    for p in list(two.held):
        two._give_back(p)
    events = scan_events(config.events_dir).collect()
    assert events.height == 60 and events["event_id"].n_unique() == 60


def _on(partition: int, make, n: int = 4) -> Hit:
    """Return the first hit ``make(i)`` routes to ``partition`` (of ``n``)."""
    i = 0
    while stream.partition_of(hit := make(i), n) != partition:
        i += 1
    return hit


def _started(redis, config, partition: int) -> Worker:
    worker = Worker(redis, config, partition)
    assert worker.acquire_lease()
    worker.start()
    return worker


def _turn(worker: Worker) -> None:
    """Handle what the worker's partition holds, then go idle (letting the lock go)."""
    handled = worker.step()
    while handled:
        handled = worker.step()
    worker.flush()


def test_a_handover_drops_only_what_the_other_worker_changed(redis, config):
    """After another worker merged a person, a worker re-reads just that person (its
    next touchpoint goes to the survivor) and keeps the rest of its cache."""
    config = dataclasses.replace(config, stream_partitions=4)
    stream.ensure_group(redis, 4)
    a, b = _started(redis, config, 0), _started(redis, config, 1)
    cookie = _on(0, lambda i: make_hit(uid=f"c{i}"))
    email = _on(1, lambda i: make_identify(f"p{i}@acme.de")).traits["email"]
    other = _on(1, lambda i: make_hit(uid=f"q{i}"))
    stream.enqueue(redis, [cookie, make_identify(email), other], {}, atomic=False, partitions=4)
    _turn(a), _turn(b)
    q = person_of(redis, IdKind.UID, other.uid)["person_id"]
    assert q in b.ingest._states
    link = make_identify(email, uid=cookie.uid)
    assert stream.partition_of(link, 4) == 0
    stream.enqueue(redis, [link], {}, atomic=False, partitions=4)
    _turn(a)
    stream.enqueue(redis, [make_identify(email)], {}, atomic=False, partitions=4)
    _turn(b)
    survivor = person_of(redis, IdKind.UID, cookie.uid)
    assert survivor["person_id"] == person_of(redis, IdKind.EMAIL, email)["person_id"]
    # cookie page view, 3 identifies, 2 tier promotions: all on the survivor
    assert len(survivor["touchpoints"]) == 6, survivor["touchpoints"]
    assert redis.xlen(keyspace.MERGES) == 1
    assert q in b.ingest._states  # not changed by a: still cached
    a.release_lease(), b.release_lease()


def test_a_worker_behind_the_change_log_drops_its_whole_cache(redis, config):
    """A gap in the change log (entries trimmed past the last one read) empties the cache."""
    config = dataclasses.replace(config, stream_partitions=4)
    stream.ensure_group(redis, 4)
    b = _started(redis, config, 1)
    other = _on(1, lambda i: make_hit(uid=f"q{i}"))
    stream.enqueue(redis, [other], {}, atomic=False, partitions=4)
    _turn(b)
    assert b.ingest._states
    redis.xadd(keyspace.IDENTITY_CHANGES, {"by": "x", "prev": "1-1", "persons": "", "ids": ""})
    stream.enqueue(redis, [_on(1, lambda i: make_hit(uid=f"z{i}"))], {}, atomic=False, partitions=4)
    _turn(b)
    assert person_of(redis, IdKind.UID, other.uid)["person_id"] not in b.ingest._states
    b.release_lease()


def test_a_worker_that_lost_the_identity_lock_handles_its_batch_again(redis, config):
    """A worker whose identity lock another took during its turn (it stalled past the
    lock's time) learns it with its writes' replies: nothing is acked or stored; run
    again, it stores every event once and counts every person once."""
    from dmp.ingest.identitylock import IdentityLockLost

    config = dataclasses.replace(config, stream_partitions=4)
    stream.ensure_group(redis, 4)
    hits = [_on(2, lambda i, k=k: make_hit(uid=f"s{k}-{i}")) for k in range(5)]
    stream.enqueue(redis, hits, {}, atomic=False, partitions=4)
    worker = _started(redis, config, 2)
    lock = worker.ingest.identity
    took = lock.acquire

    def stalled(ask=None) -> list:
        replies = took(ask)
        redis.set(keyspace.IDENTITY_LOCK, "another-worker", px=10_000)  # ours ran out
        return replies

    lock.acquire = stalled
    with pytest.raises(IdentityLockLost):  # found with the writes' replies, before any ack
        worker.step()
        worker.flush()
    worker.ingest.reset()  # as the fleet's restart of the worker does
    assert status(redis)["events_stored"] == 0 and status(redis)["pending"] == 5
    redis.delete(keyspace.IDENTITY_LOCK)
    worker.release_lease()
    Worker(redis, config, 2).run(once=True)
    events = scan_events(config.events_dir).collect()
    assert events.height == 5 and events["event_id"].n_unique() == 5
    assert status(redis)["persons"]["low"] == 5
    for hit in hits:
        # the page view and its tier promotion, each once
        assert len(person_of(redis, IdKind.UID, hit.uid)["touchpoints"]) == 2


def test_withdrawn_consent_unlinks_the_cookie_on_a_cluster(cluster, redis_cluster, tmp_path):
    """On a Redis Cluster a consent withdrawal unlinks the cookie, records the withdrawal
    on the person and moves the tier counts (no CROSSSLOT)."""
    from dmp.config import load_config
    from dmp.people import profiles
    from dmp.people.identity import Identifier

    config = load_config({"redis_url": redis_cluster.url, "data_dir": tmp_path / "d"}, env={})
    stream.ensure_group(cluster, 1)
    stream.enqueue(cluster, [make_hit(uid="c1")], {}, atomic=False)
    Worker(cluster, config).run(once=True)
    pid = person_of(cluster, IdKind.UID, "c1")["person_id"]
    withdrawal = make_hit(
        type="consent",
        event="consent_withdrawn",
        uid="c1",
        timestamp=make_hit().timestamp + 1000,
        consent={"analytics": False, "ads": False, "email": False},
    )
    stream.enqueue(cluster, [withdrawal], {}, atomic=False)
    Worker(cluster, config).run(once=True)
    assert profiles.find_person(cluster, Identifier(IdKind.UID, "c1")) is None
    person = profiles.get_person(cluster, pid)
    assert person["tier"] == "unknown"
    assert person["touchpoints"][0]["event"] == "consent_withdrawn"
    assert status(cluster)["persons"]["low"] == 0


def test_a_first_sighting_waits_for_the_holders_writes(redis, config):
    """Step by step: while one worker holds the identity lock, another seeing a new email
    waits; the holder's turn makes the email's person, and the waiter then joins that
    person (with the lock switched off it would make a second one)."""
    config = dataclasses.replace(config, stream_partitions=4)
    stream.ensure_group(redis, 4)
    first = _on(0, lambda i: make_identify(f"w{i}@acme.de", uid=f"wa{i}"))
    email = first.traits["email"]
    second = _on(1, lambda i: make_identify(email, uid=f"wb{i}"))
    stream.enqueue(redis, [first, second], {}, atomic=False, partitions=4)
    a, b = _started(redis, config, 0), _started(redis, config, 1)
    a.ingest.identity.acquire()  # a's turn has begun
    waiter = threading.Thread(target=b.step)
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive()  # b waits for the lock, its hit not resolved
    assert a.step() == 1  # a's turn: resolved, written, logged, let go
    waiter.join(10)
    assert not waiter.is_alive()
    a.flush(), b.flush()
    a.release_lease(), b.release_lease()
    one = person_of(redis, IdKind.UID, first.uid)["person_id"]
    assert one == person_of(redis, IdKind.UID, second.uid)["person_id"]
    assert one == person_of(redis, IdKind.EMAIL, email)["person_id"]
    assert status(redis)["persons"]["medium"] == 1


def _server(**fields) -> Hit:
    """Return a trusted server-side track (the Segment API with a server key), or what
    ``fields`` make of it."""
    base = {"source": "api", "type": "track", "event": "Demo", "trusted": True, "consent": {}}
    return make_hit(**{**base, "uid": "", **fields})


def test_a_person_merged_away_leads_to_its_survivor_read_again(redis, config):
    """A worker that merged a person away, whose survivor another worker then changed,
    reads the survivor again for a hit naming the merged person's other identifier."""
    config = dataclasses.replace(config, stream_partitions=4)
    stream.ensure_group(redis, 4)
    b, a = _started(redis, config, 1), _started(redis, config, 0)
    user = _on(1, lambda i: _server(user_id=f"uq{i}")).user_id
    cookie = _on(1, lambda i: _server(uid=f"m{i}", user_id=user)).uid
    email = _on(1, lambda i: make_identify(f"m{i}@acme.de")).traits["email"]
    link = make_identify(email, uid=cookie)  # the email's person survives the merge
    assert stream.partition_of(link, 4) == 1
    first = [_server(uid=cookie, user_id=user), make_identify(email), link]
    stream.enqueue(redis, first, {}, atomic=False, partitions=4)
    _turn(b)
    survivor = person_of(redis, IdKind.EMAIL, email)["person_id"]
    assert person_of(redis, IdKind.USER, user)["person_id"] == survivor
    touch = _on(0, lambda i: _server(anonymous_id=f"anon{i}", user_id=f"user-{email}"))
    stream.enqueue(redis, [touch], {}, atomic=False, partitions=4)
    _turn(a)  # writes the survivor: b drops it from its cache
    stream.enqueue(redis, [_server(user_id=user)], {}, atomic=False, partitions=4)
    _turn(b)
    person = person_of(redis, IdKind.USER, user)
    assert person["person_id"] == survivor
    assert [t["event"] for t in person["touchpoints"]].count("Demo") == 3
    a.release_lease(), b.release_lease()


def test_imported_rows_spread_over_the_partitions(redis):
    """A CRM or newsletter import puts each row on its first identifier's partition (not
    all on partition 0), and remembers every row once."""
    from collectors import imports

    rows = [(f"digest-{i}", make_hit(uid=f"row{i}")) for i in range(40)]
    report = imports.ImportReport()
    assert len(imports.enqueue_new(redis, "crm", rows, report, partitions=4)) == 40
    lengths = [redis.xlen(keyspace.partition(p).stream) for p in range(4)]
    assert sum(lengths) == 40 and all(lengths)
    assert redis.scard(keyspace.imported_rows("crm")) == 40


def test_merges_cut_short_are_finished_only_holding_the_identity_lock(redis, config):
    """A worker starting beside others finishes a batch of merges cut short only once it
    holds the identity lock: a live worker's batch, made under the lock, is never taken
    for one cut short."""
    cfg = dataclasses.replace(config, stream_partitions=2)
    other = Lease(redis, keyspace.IDENTITY_LOCK, 60, "another-worker")
    assert other.take()
    redis.sadd(keyspace.MERGE_INTENTS, "cut-short")
    redis.set(keyspace.merge_intent("cut-short"), "[]")
    starting = threading.Thread(target=_started, args=(redis, cfg, 1), daemon=True)
    starting.start()
    starting.join(1.0)
    assert starting.is_alive() and redis.exists(keyspace.merge_intent("cut-short"))
    other.release()
    starting.join(30)
    assert not starting.is_alive()
    assert not redis.exists(keyspace.merge_intent("cut-short"))
    assert not redis.sismember(keyspace.MERGE_INTENTS, "cut-short")


def test_returning_hits_are_written_while_another_holds_the_identity_lock(redis, config):
    """A known browser coming back needs no turn on the identity lock: its batch is
    stored while another worker holds the lock; a new browser's batch waits for it."""
    config = dataclasses.replace(config, stream_partitions=4)
    stream.ensure_group(redis, 4)
    known = _on(0, lambda i: make_hit(uid=f"r{i}"))
    stream.enqueue(redis, [known], {}, atomic=False, partitions=4)
    a = _started(redis, config, 0)
    _turn(a)
    other = Lease(redis, keyspace.IDENTITY_LOCK, 60, "another-worker")
    assert other.take()
    back = make_hit(uid=known.uid, url="https://acme.de/pricing")
    stream.enqueue(redis, [back], {}, atomic=False, partitions=4)
    assert a.step() == 1  # no wait: the lock is another's all along
    a.flush()
    person = person_of(redis, IdKind.UID, known.uid)
    assert [t.get("url") for t in person["touchpoints"]].count(back.url) == 1
    new = _on(0, lambda i: make_hit(uid=f"n{i}"))
    stream.enqueue(redis, [new], {}, atomic=False, partitions=4)
    waiter = threading.Thread(target=lambda: [a.step() for _ in range(3)])
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive()  # a first sighting waits for its turn
    other.release()
    waiter.join(10)
    a.flush(), a.release_lease()
    assert person_of(redis, IdKind.UID, new.uid)["tier"] == "low"
    assert scan_events(config.events_dir).collect().height == 3


def test_a_returning_hit_of_a_person_merged_meanwhile_goes_to_the_survivor(redis, config):
    """A worker holding a person in its cache whom another worker merged away meanwhile:
    the person's next returning hit, written without the lock, is refused and handled
    again under it: its touchpoint and event row go to the survivor, none to the tombstone."""
    config = dataclasses.replace(config, stream_partitions=4)
    stream.ensure_group(redis, 4)
    a, b = _started(redis, config, 0), _started(redis, config, 1)
    email = _on(1, lambda i: make_identify(f"mq{i}@acme.de")).traits["email"]  # Q: email
    # P: a cookie on a's partition, with a user id on b's
    cookie = _on(0, lambda i: make_hit(uid=f"mc{i}")).uid
    user = _on(1, lambda i: make_identify(email, user_id=f"mu{i}")).user_id
    browser = _server(uid=cookie, user_id=user)
    stream.enqueue(redis, [browser, make_identify(email)], {}, atomic=False, partitions=4)
    _turn(a), _turn(b)
    p = person_of(redis, IdKind.UID, browser.uid)["person_id"]
    assert p in a.ingest._states
    link = make_identify(
        email, user_id=browser.user_id
    )  # P's user id with Q's email: P merges into Q
    stream.enqueue(redis, [link], {}, atomic=False, partitions=4)
    _turn(b)
    q = person_of(redis, IdKind.EMAIL, email)["person_id"]
    assert q != p and redis.hget(keyspace.person(p), "merged_into") == q
    back = make_hit(
        source="api", type="track", event="Returned", uid=browser.uid, trusted=True, consent={}
    )
    stream.enqueue(redis, [back], {}, atomic=False, partitions=4)
    _turn(a)  # a still holds P cached as live: its lock-free write is refused
    survivor = person_of(redis, IdKind.UID, browser.uid)
    assert survivor["person_id"] == q
    assert [t["event"] for t in survivor["touchpoints"]].count("Returned") == 1
    assert not redis.exists(keyspace.person(p, "touchpoints"))
    events = scan_events(config.events_dir).collect()
    assert events.filter(events["event"] == "Returned")["person_id"].to_list() == [q]
    counted = metrics.read_counter(redis, metrics.counter("dmp_returning_hits_again_total"))
    assert counted == 1
    a.release_lease(), b.release_lease()


def test_a_person_marked_for_a_merge_takes_its_hits_under_the_lock(redis, config):
    """A merge mark left behind (a crash before the merge's intent was kept) refuses the
    lock-free writes; the person's hits are then stored under the lock, none lost; and
    Redis forgetting the script (a restart) costs nothing either."""
    from dmp.people.merges import MERGING

    config = dataclasses.replace(config, stream_partitions=4)
    stream.ensure_group(redis, 4)
    first = _on(0, lambda i: make_hit(uid=f"k{i}"))
    a = _started(redis, config, 0)
    for hit in (first, make_hit(uid=first.uid)):  # a first sighting, a returning hit
        stream.enqueue(redis, [hit], {}, atomic=False, partitions=4)
        _turn(a)
    pid = person_of(redis, IdKind.UID, first.uid)["person_id"]
    redis.hset(keyspace.person(pid), MERGING, "cut-short")
    redis.script_flush()
    urls = [f"https://acme.de/p{n}" for n in range(3)]
    for url in urls:  # one batch each
        stream.enqueue(redis, [make_hit(uid=first.uid, url=url)], {}, atomic=False, partitions=4)
        _turn(a)
    person = person_of(redis, IdKind.UID, first.uid)
    assert person["person_id"] == pid
    assert {t.get("url") for t in person["touchpoints"]} >= set(urls)
    # refused once; then the person, read again with its mark, goes the slow way at once
    counted = metrics.read_counter(redis, metrics.counter("dmp_returning_hits_again_total"))
    assert counted == 1
    assert scan_events(config.events_dir).collect().height == 5
    a.release_lease()


def test_a_resolution_made_from_a_stale_cache_is_made_again_in_the_turn(redis, config):
    """A worker resolves its batch before its turn on the lock, from its cache. Another
    worker gave a person it holds an email meanwhile: the change log shows it in the
    turn, and the batch is resolved again from Redis, as if the workers had taken turns
    on the whole of it: a different email makes a second person and a conflict, and
    never overwrites the first."""
    config = dataclasses.replace(config, stream_partitions=4)
    stream.ensure_group(redis, 4)
    a, b = _started(redis, config, 0), _started(redis, config, 1)
    cookie = _on(0, lambda i: make_hit(uid=f"sc{i}")).uid
    user = _on(1, lambda i: make_identify("first@acme.de", user_id=f"su{i}")).user_id
    stream.enqueue(redis, [_server(uid=cookie, user_id=user)], {}, atomic=False, partitions=4)
    _turn(a)  # a caches P (cookie, user id), no email
    stream.enqueue(
        redis, [make_identify("first@acme.de", user_id=user)], {}, atomic=False, partitions=4
    )
    _turn(b)  # b gives P an email
    p = person_of(redis, IdKind.UID, cookie)["person_id"]
    assert person_of(redis, IdKind.EMAIL, "first@acme.de")["person_id"] == p
    assert a.ingest._states[p].email == ""  # a's cache is stale
    stream.enqueue(
        redis, [make_identify("second@acme.de", uid=cookie)], {}, atomic=False, partitions=4
    )
    _turn(a)
    assert redis.hget(keyspace.person(p), "email") == "first@acme.de"
    assert person_of(redis, IdKind.EMAIL, "second@acme.de")["person_id"] != p
    assert person_of(redis, IdKind.UID, cookie)["person_id"] == p
    assert redis.xlen(keyspace.CONFLICTS) == 1
    a.release_lease(), b.release_lease()


def test_a_consent_from_the_companys_systems_is_never_skipped_as_said_before(redis, config):
    """A server-side consent speaks for the person's email too, which another partition's
    hits change: the same withdrawal again, after another worker recorded a grant in
    between, is applied (the latest signal holds), not skipped as already said."""
    from dmp.people import consents as consent_rules
    from dmp.people.identity import Identifier

    config = dataclasses.replace(config, stream_partitions=4)
    stream.ensure_group(redis, 4)
    a, b = _started(redis, config, 0), _started(redis, config, 1)
    t0 = make_hit().timestamp

    def grant(i: int, at: int = t0, consent: dict | None = None) -> Hit:  # the email alone
        traits = {"email": f"cw{i}@acme.de"}
        return _server(
            type="identify", event="identify", traits=traits, timestamp=at, consent=consent or {}
        )

    first = _on(1, grant)
    email = first.traits["email"]
    user = _on(0, lambda i: make_identify(email, user_id=f"cu{i}")).user_id

    def withdraw(at: int) -> Hit:
        return _server(user_id=user, event="Prefs", consent={"email": False}, timestamp=at)

    link = make_identify(email, user_id=user)
    stream.enqueue(redis, [link, withdraw(t0 + 1000)], {}, atomic=False, partitions=4)
    _turn(a)  # P: the user id and the email; email consent withdrawn
    later = grant(int(email[2:].split("@")[0]), t0 + 2000, {"email": True})
    assert stream.partition_of(later, 4) == 1
    stream.enqueue(redis, [later], {}, atomic=False, partitions=4)
    _turn(b)  # another worker records a grant for the email, later
    stream.enqueue(redis, [withdraw(t0 + 3000)], {}, atomic=False, partitions=4)
    _turn(a)  # the same withdrawal again, later still
    pid = person_of(redis, IdKind.EMAIL, email)["person_id"]
    field = consent_rules.state_field("email", Identifier(IdKind.EMAIL, email))
    assert redis.hget(keyspace.person(pid), field).startswith("0:")
    a.release_lease(), b.release_lease()


def test_a_returning_hit_after_an_unmerge_goes_to_the_person_given_back(redis, config):
    """A merge undone while a worker handles a batch whose cache still leads a cookie to
    the survivor: the lock-free write is refused (the unmerge marked the survivor), and
    the hit goes to the person the cookie was given back to, its event row too."""
    from dmp.people import control, profiles, unmerge
    from dmp.people.identity import Identifier

    config = dataclasses.replace(config, stream_partitions=4)
    stream.ensure_group(redis, 4)
    cookie, other = (_on(0, lambda i, p=p: make_hit(uid=f"{p}{i}")).uid for p in ("um", "uq"))
    email = "unmerged@acme.de"
    first = [make_hit(uid=cookie), make_identify(email, uid=other)]  # P, and Q with the email
    a = _started(redis, config, 0)
    for batch in (first, [make_identify(email, uid=cookie)]):  # then P merges into Q
        stream.enqueue(redis, batch, {}, atomic=False, partitions=4)
        _turn(a)
    a.release_lease()
    q = person_of(redis, IdKind.EMAIL, email)["person_id"]
    p = redis.xrange(keyspace.MERGES)[-1][1]["from"]
    a = _started(redis, config, 0)  # a fresh cache: the cookie leads to Q
    for n in range(2):  # the second is a returning hit, written without the lock
        stream.enqueue(
            redis,
            [make_hit(uid=cookie, url=f"https://acme.de/{n}")],
            {},
            atomic=False,
            partitions=4,
        )
        _turn(a)
    assert a.ingest._owners[Identifier(IdKind.UID, cookie)] == q
    timelines = a.ingest._timelines
    send = timelines.send

    def unmerged_meanwhile(returning, states) -> None:  # after the batch's question
        unmerge.apply(redis, control.control_hit(unmerge.UNMERGE, p, "request-1"))
        send(returning, states)

    timelines.send = unmerged_meanwhile
    back = make_hit(uid=cookie, url="https://acme.de/after")
    stream.enqueue(redis, [back], {}, atomic=False, partitions=4)
    _turn(a)
    assert person_of(redis, IdKind.UID, cookie)["person_id"] == p

    def urls(pid: str) -> list:
        return [t.get("url") for t in profiles.get_person(redis, pid)["touchpoints"]]

    assert back.url in urls(p) and back.url not in urls(q)
    events = scan_events(config.events_dir).collect()
    assert events.filter(events["url"] == back.url)["person_id"].to_list() == [p]
    counted = metrics.read_counter(redis, metrics.counter("dmp_returning_hits_again_total"))
    assert counted == 1
    a.release_lease()


def test_a_cookie_of_a_person_erased_since_it_was_cached_makes_nobody_new(redis, config):
    """An erasure applied elsewhere while a worker holds the person in its cache: the
    worker's next hit of that cookie sees the epoch move, and counts the hit only in
    aggregate instead of making a new person of an erased one."""
    from dmp.people import control, erasure, profiles
    from dmp.people.identity import Identifier

    stream.ensure_group(redis, 1)
    worker = _started(redis, config, 0)
    stream.enqueue(redis, [make_hit(uid="erased-cookie")], {}, atomic=False)
    _turn(worker)
    pid = person_of(redis, IdKind.UID, "erased-cookie")["person_id"]
    assert pid in worker.ingest._states
    erasure.apply(redis, control.control_hit(erasure.ERASE, pid, "request-1"))
    stream.enqueue(redis, [make_hit(uid="erased-cookie")], {}, atomic=False)
    _turn(worker)
    worker.release_lease()
    assert profiles.find_person(redis, Identifier(IdKind.UID, "erased-cookie")) is None
    assert status(redis)["persons"]["low"] == 0
    counted = metrics.read_counter(redis, metrics.counter("dmp_events_erased_identifier_total"))
    assert counted == 1
