"""The ingest stream, event-log commit and spool replay on a real three-master Redis Cluster."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from collectors import imports
from dmp.ingest import replay, stream
from dmp.ingest.eventlog import EventBuffer, EventLog, event_digest, event_row
from dmp.privacy import requests
from dmp.records import Hit
from dmp.storage import keyspace, metrics
from tests.factories import make_hit, uids_on_every_partition


def _node_of(cluster, key: str) -> str:
    return cluster.nodes_manager.get_node_from_slot(key_slot(key.encode())).name


def _stream_uids(cluster, partition: int) -> list[str]:
    entries = cluster.xrange(keyspace.partition(partition).stream)
    return [Hit.from_json(fields[stream.FIELD]).uid for _, fields in entries]


def test_partition_streams_lie_on_more_than_one_node(cluster):
    """The four partitions' streams are spread over the cluster's nodes (what the other
    tests here rely on to cross slots)."""
    nodes = {_node_of(cluster, keyspace.partition(p).stream) for p in range(4)}
    assert len(nodes) >= 2


def test_an_atomic_batch_over_partitions_lands_with_its_counters(cluster):
    """An atomic enqueue spanning four partitions puts each hit on its partition's stream
    and then adds the counters and the ``also`` commands (all on other slots)."""
    stream.ensure_group(cluster, 4)
    uids = uids_on_every_partition()
    hits = [make_hit(uid=u) for u in uids]
    also = [("SADD", keyspace.imported_rows("crm"), "d1", "d2")]
    stream.enqueue(cluster, hits, {"dmp_test_total": 4}, atomic=True, also=also, partitions=4)
    assert [_stream_uids(cluster, p) for p in range(4)] == [[u] for u in uids]
    assert metrics.read_counter(cluster, "dmp_test_total") == 4
    assert cluster.smembers(keyspace.imported_rows("crm")) == {"d1", "d2"}


def test_an_atomic_batch_that_fails_leaves_the_also_commands_undone(cluster):
    """When a partition's MULTI is refused, the ``also`` commands (an import's digests)
    are not written: the rows are imported again next time instead of being lost."""
    key = keyspace.partition(1).stream
    cluster.set(key, "not a stream")  # XADD on it fails: EXEC answers an error
    also = [("SADD", keyspace.imported_rows("crm"), "d1")]
    hit = make_hit(uid=uids_on_every_partition()[1])
    with pytest.raises(Exception, match="WRONGTYPE"):
        stream.enqueue(cluster, [hit], {"dmp_test_total": 1}, atomic=True, also=also, partitions=4)
    assert not cluster.exists(keyspace.imported_rows("crm"))


def test_an_import_chunk_and_its_digests_land_on_a_cluster(cluster):
    """collectors.imports.enqueue_new puts new rows on the stream and remembers their
    digests in the import's own slot; a second import of the same rows adds nothing."""
    stream.ensure_group(cluster, 1)
    rows = [(f"digest-{i}", make_hit(uid=f"row{i}")) for i in range(5)]
    report = imports.ImportReport()
    assert len(imports.enqueue_new(cluster, "crm", rows, report)) == 5
    again = imports.ImportReport()
    assert imports.enqueue_new(cluster, "crm", rows, again) == [] and again.already == 5
    assert cluster.xlen(keyspace.partition(0).stream) == 5


def test_a_privacy_request_is_queued_on_a_cluster(cluster):
    """A person request goes to partition 0's stream and its queued mark is set."""
    stream.ensure_group(cluster, 1)
    request_id = requests.request_erasure(cluster, "person-1", by="test")
    assert cluster.get(keyspace.control_queued(request_id)) == "person-1"
    assert cluster.xlen(keyspace.partition(0).stream) == 1


def test_pending_counts_sum_partitions_on_a_cluster(cluster):
    """Pending counts per partition come back for partitions on different nodes."""
    stream.ensure_group(cluster, 4)
    hits = [make_hit(uid=u) for u in uids_on_every_partition() for _ in range(2)]
    stream.enqueue(cluster, hits, {}, atomic=False, partitions=4)
    assert stream.pending_counts(cluster) == {-1: 0, 0: 2, 1: 2, 2: 2, 3: 2}
    assert stream.pending_count(cluster) == 8


@pytest.mark.parametrize("fenced", [True, False])
def test_a_partition_flush_commits_on_a_cluster(cluster, tmp_path, fenced):
    """A flush of partition 2 (intent, files, the WATCHed or plain MULTI over the
    partition's keys, recent hits included) acks its entries and counts its events."""
    keys = keyspace.partition(2)
    stream.ensure_partition_group(cluster, keys)
    hit = make_hit(uid="c1")
    cluster.xadd(keys.stream, {stream.FIELD: hit.to_json()})
    (entry_id, _), *_ = cluster.xreadgroup(keyspace.GROUP, "w", {keys.stream: ">"})[0][1]
    log = EventLog(cluster, tmp_path / "events", dedup_days=2, keys=keys)
    if fenced:
        cluster.set(keys.lease, "token")
        log.fence = (keys.lease, "token")
    buf = EventBuffer()
    buf.events.append(event_row(hit, "person-1"))
    buf.take(entry_id, event_digest(hit.site_id, hit.event_id))
    buf.stats["persons_new"] += 1
    buf.metrics["dmp_events_test_total"] += 1
    buf.recent["pixel:bot"] += 1
    buf.aggregates[(hit.site_id, "2026-11-29", "views")] += 1
    assert len(log.flush(buf)) == 1
    assert cluster.xlen(keys.stream) == 0 and not cluster.smembers(keys.intents)
    assert cluster.hget(keys.stats, "events_stored") == "1"
    assert log.seen([event_digest(hit.site_id, hit.event_id)]) == [True]


def test_spooled_lines_replay_to_their_partitions(cluster, tmp_path):
    """A spool file replayed on a cluster puts each line on its own partition's stream
    (and counts the replay), write keys resolved through the {dmp} slot."""
    stream.ensure_group(cluster, 4)
    uids = uids_on_every_partition()
    cluster.set(keyspace.write_key("abc"), "acme-gmbh")
    lines = [make_hit(uid=u).to_json() for u in uids]
    lines.append(make_hit(uid=uids[3], site_id=replay.UNRESOLVED + "abc").to_json())
    path = tmp_path / f"x{replay.SUFFIX}"
    path.write_text("".join(line + "\n" for line in lines))
    done: dict = {}
    assert replay.replay_range(cluster, path, 0, path.stat().st_size, done, 4) == 5
    expected = [[uids[0]], [uids[1]], [uids[2]], [uids[3], uids[3]]]
    assert [_stream_uids(cluster, p) for p in range(4)] == expected
    assert metrics.read_counter(cluster, replay.REPLAYED) == 5
