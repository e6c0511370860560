"""The collectors' appender on a real three-master Redis Cluster: hits sent without
waiting reach their partitions' nodes, and a hit a node redirects is spooled, not lost."""

from __future__ import annotations

import threading
import time

import pytest
import redis as redis_lib
from redis.crc import key_slot

from dmp.ingest import appender as appender_module
from dmp.ingest import stream
from dmp.ingest.appender import Appender
from dmp.ingest.spool import Spool
from dmp.records import Hit
from dmp.storage import keyspace, metrics
from tests.factories import append_from_threads, make_hit, uids_on_every_partition
from tests.served import wait_for


def _event_ids(cluster, partition: int) -> list[str]:
    entries = cluster.xrange(keyspace.partition(partition).stream)
    return [Hit.from_json(fields[stream.FIELD]).event_id for _, fields in entries]


def test_hits_from_several_threads_reach_every_partition(cluster):
    """Pixel-style appends from three threads, over four partitions on three nodes, all
    land on their partitions' streams once; the counters reach the {dmp} hash."""
    stream.ensure_group(cluster, 4)
    uids = uids_on_every_partition(prefix="a")
    appender = Appender(cluster, partitions=4)
    sent: dict[int, list[str]] = {p: [] for p in range(4)}
    lock = threading.Lock()

    def send(k: int) -> None:
        for i in range(100):
            p = (i + k) % 4
            hit = make_hit(uid=uids[p])
            appender.append([hit], {"dmp_test_total": 1})
            with lock:
                sent[p].append(hit.event_id)

    threads = [threading.Thread(target=send, args=(k,)) for k in range(3)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        appender.sync()
    finally:
        appender.close()
    for p in range(4):
        assert sorted(_event_ids(cluster, p)) == sorted(sent[p])
    assert metrics.read_counter(cluster, "dmp_test_total") == 300


def _reads(cluster) -> int:
    """Return the reads every primary of the cluster has processed so far."""
    total = 0
    for node in cluster.get_primaries():
        with redis_lib.Redis(host=node.host, port=node.port) as plain:
            total += int(plain.info("stats")["total_reads_processed"])
    return total


def _from_threads_on_cluster(cluster, tmp_path, send_every: float) -> int:
    """Append 200 hits from each of eight threads over four partitions (with a spool, as
    the collectors run); check each reached its partition once; return the writes the
    cluster's nodes read."""
    stream.ensure_group(cluster, 4)
    uids = uids_on_every_partition(prefix="o")
    spool = Spool(tmp_path / f"spool-{send_every}", cluster, 1 << 24, partitions=4)
    appender = Appender(cluster, spool, partitions=4, send_every=send_every)
    hits = [[make_hit(uid=uids[(t + i) % 4]) for i in range(200)] for t in range(8)]
    reads = append_from_threads(appender, hits, lambda: _reads(cluster))
    assert not spool.active
    for p in range(4):
        expected = [h.event_id for mine in hits for h in mine if stream.partition_of(h, 4) == p]
        assert sorted(_event_ids(cluster, p)) == sorted(expected)  # each once
    return reads


def test_the_hits_of_many_threads_reach_the_cluster_together_each_once(cluster, tmp_path):
    """On a cluster too the outbox sends a process's hits together: each node gets its
    share of what gathered as one write, so the three masters read a few dozen writes for
    1,600 hits, not one each (and not one per thread's hit either)."""
    reads = _from_threads_on_cluster(cluster, tmp_path, send_every=0.02)
    assert reads <= 1600 / 8, reads


def test_each_thread_sends_its_own_hits_to_the_cluster_with_send_every_zero(cluster, tmp_path):
    """DMP_COLLECT_SEND_MS=0 on a cluster: each request thread sends its hits to their
    nodes at once (the baseline the outbox test is measured against)."""
    reads = _from_threads_on_cluster(cluster, tmp_path, send_every=0)
    assert reads > 1600 / 8, reads


def _move_slot(cluster, slot: int, to: redis_lib.cluster.ClusterNode) -> None:
    """Give an empty slot to node ``to``, telling every node (the client is not told)."""
    target_id = redis_lib.Redis(host=to.host, port=to.port).execute_command("CLUSTER", "MYID")
    for node in cluster.get_primaries():
        with redis_lib.Redis(host=node.host, port=node.port) as plain:
            plain.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)


def test_a_hit_a_node_redirects_is_spooled_and_replayed(cluster, tmp_path):
    """When a partition's slot moved to another node after the client learned the map,
    the node answers MOVED: the hit goes to the spool, which replays it to the new node,
    and no hit is lost."""
    stream.ensure_group(cluster, 4)
    uid = uids_on_every_partition(prefix="a")[2]
    keys = keyspace.partition(2)
    slot = key_slot(keys.stream.encode())
    was = cluster.nodes_manager.get_node_from_slot(slot)
    other = next(n for n in cluster.get_primaries() if n.name != was.name)
    spool = Spool(tmp_path / "spool", cluster, 1 << 20, partitions=4)
    appender = Appender(cluster, spool, partitions=4)
    try:
        first = make_hit(uid=uid)
        appender.append([first], {})
        appender.sync()
        cluster.delete(keys.stream)  # the slot must be empty to be handed over
        _move_slot(cluster, slot, other)
        moved = make_hit(uid=uid)
        appender.append([moved], {})
        appender.sync()  # the old node answers MOVED: spooled
        assert spool.active
        # Its thread replays: the cluster Bulk meets MOVED too, relearns the map, and the
        # next try succeeds.
        deadline = time.monotonic() + 30
        while spool.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not spool.active
        assert cluster.nodes_manager.get_node_from_slot(slot).name == other.name
        assert _event_ids(cluster, 2) == [moved.event_id]
    finally:
        appender.close()
        cluster.delete(keys.stream)
        _move_slot(cluster, slot, was)  # as the session's other tests expect it
        cluster.nodes_manager.initialize()


def test_a_hit_of_a_slot_no_node_is_known_for_is_spooled_not_lost(cluster, tmp_path):
    """While the client's slot map lacks a partition's slot (a cluster being resharded),
    the hit goes to the spool instead of failing the request (the pixel would have lost
    it), the slot map is relearnt, and the spool replays it to its stream once."""
    stream.ensure_group(cluster, 4)
    uid = uids_on_every_partition(prefix="s")[1]
    slot = key_slot(keyspace.partition(1).stream.encode())
    spool = Spool(tmp_path / "spool", cluster, 1 << 20, partitions=4)
    appender = Appender(cluster, spool, partitions=4)
    try:
        cluster.nodes_manager.slots_cache.pop(slot)  # as if no node were known for it
        hit = make_hit(uid=uid)
        appender.append([hit], {"dmp_test_total": 1})  # must not raise
        appender.flush()  # the outbox's sender meets the unknown slot
        assert spool.active
        deadline = time.monotonic() + 30
        while spool.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not spool.active
        assert _event_ids(cluster, 1) == [hit.event_id]
    finally:
        appender.close()
        cluster.delete(keyspace.partition(1).stream)


def _alone_on_its_node(cluster) -> int:
    """Return a partition (of four) whose stream's node serves no other partition's."""
    node_of = [
        cluster.nodes_manager.get_node_from_slot(
            key_slot(keyspace.partition(p).stream.encode())
        ).name
        for p in range(4)
    ]
    return next(p for p in range(4) if node_of.count(node_of[p]) == 1)


def test_a_bug_in_one_nodes_share_spools_it_and_sends_the_others_once(
    cluster, tmp_path, monkeypatch
):
    """A bug while one node's share is made ready spools that share and still sends the
    other nodes' theirs: every hit reaches its partition once. Before, the bug ended the
    send of everything the sender had taken, which went to the spool whole, and the shares
    already written were written twice."""
    stream.ensure_group(cluster, 4)
    uids = uids_on_every_partition(prefix="b")
    failing = _alone_on_its_node(cluster)  # and its hits come last
    others = [p for p in range(4) if p != failing]
    hits = [make_hit(uid=uids[others[i % 3]]) for i in range(6)]
    hits += [make_hit(uid=uids[failing]) for _ in range(2)]
    failed: list[bool] = []
    real_args = appender_module.xadd_args

    def failing_args(line, target):
        if target == failing and not failed:
            failed.append(True)
            raise RuntimeError("a bug")
        return real_args(line, target)

    monkeypatch.setattr(appender_module, "xadd_args", failing_args)
    spool = Spool(tmp_path / "spool", cluster, 1 << 20, partitions=4)
    appender = Appender(cluster, spool, partitions=4, send_every=0.001)
    try:
        appender.append(hits, {})
        appender.flush()
        assert failed
        wait_for(lambda: not spool.active, 30, "the spool to replay the failed share")
        appender.sync()
    finally:
        appender.close()
    try:
        for p in range(4):
            expected = [h.event_id for h in hits if stream.partition_of(h, 4) == p]
            assert sorted(_event_ids(cluster, p)) == sorted(expected)  # each once
    finally:
        for p in range(4):
            cluster.delete(keyspace.partition(p).stream)


def test_without_a_spool_a_bug_in_one_share_still_sends_the_others(cluster, monkeypatch):
    """Without a spool the bug is raised (the request counts its hit as lost), but only
    after the other nodes' shares were sent."""
    stream.ensure_group(cluster, 4)
    uids = uids_on_every_partition(prefix="n")
    hits = [make_hit(uid=uids[p]) for p in range(4)]
    failing = _alone_on_its_node(cluster)
    real_args = appender_module.xadd_args

    def failing_args(line, target):
        if target == failing:
            raise RuntimeError("a bug")
        return real_args(line, target)

    monkeypatch.setattr(appender_module, "xadd_args", failing_args)
    appender = Appender(cluster, partitions=4)
    try:
        with pytest.raises(RuntimeError):
            appender.append(hits, {})
        appender.sync()
    finally:
        appender.close()
    try:
        for p in range(4):
            assert _event_ids(cluster, p) == ([] if p == failing else [hits[p].event_id])
    finally:
        for p in range(4):
            cluster.delete(keyspace.partition(p).stream)
