"""Ingest in partitions: routing, the single stream of old, counters summed over partitions."""

from __future__ import annotations

import dataclasses
import zlib

from dmp.ingest import stream
from dmp.ingest.worker import Worker, status
from dmp.storage import keyspace, metrics
from tests.factories import make_hit


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
