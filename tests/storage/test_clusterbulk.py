"""dmp.storage.clusterbulk: a Bulk on a real Redis Cluster answers as on one server."""

from __future__ import annotations

import pytest
import redis as redis_lib
from redis.crc import key_slot

from dmp.storage.bulk import Bulk
from dmp.storage.redisserver import connect, is_cluster_url


def _spread(n: int) -> list[str]:
    """Return n keys whose slots lie on different nodes of a three-master cluster."""
    return [f"key:{i}" for i in range(n)]


def test_cluster_urls_are_told_from_single_server_ones() -> None:
    """redis+cluster:// and rediss+cluster:// name a cluster; redis:// and unix:// do not."""
    assert is_cluster_url("redis+cluster://a:1,b:2")
    assert is_cluster_url("REDISS+CLUSTER://a:1")
    assert not is_cluster_url("redis://localhost:6379/0")
    assert not is_cluster_url("unix:///tmp/redis.sock")


def test_a_cluster_url_without_a_node_is_refused() -> None:
    """A cluster URL must name host:port pairs: one clear ValueError otherwise."""
    with pytest.raises(ValueError, match="host:port"):
        connect("redis+cluster://localhost")


def test_replies_come_back_in_command_order_across_nodes(cluster) -> None:
    """Commands on keys of every node, mixed, answer in the order they were queued."""
    keys = _spread(30)
    assert (
        len({cluster.nodes_manager.get_node_from_slot(key_slot(k.encode())).name for k in keys})
        == 3
    )
    bulk = Bulk()
    for i, key in enumerate(keys):
        bulk.add("SET", key, f"v{i}")
        bulk.add("INCRBY", key + ":n", i)
    for key in keys:
        bulk.add("GET", key)
    replies = bulk.execute(cluster)
    assert replies[: 2 * len(keys) : 2] == [b"OK"] * len(keys)
    assert replies[1 : 2 * len(keys) : 2] == list(range(len(keys)))
    assert replies[2 * len(keys) :] == [f"v{i}".encode() for i in range(len(keys))]


def test_multi_key_reads_and_deletes_span_slots(cluster) -> None:
    """MGET answers one list and DEL one count, whatever slots their keys are on."""
    keys = _spread(12)
    for key in keys[:8]:
        cluster.set(key, key)
    bulk = Bulk()
    bulk.add("MGET", *keys)
    bulk.add("DEL", *keys)
    bulk.add("EXISTS", *keys)
    found, deleted, left = bulk.execute(cluster)
    assert found == [k.encode() for k in keys[:8]] + [None] * 4
    assert (deleted, left) == (8, 0)


def test_a_transaction_of_one_hash_tag_runs_whole(cluster) -> None:
    """A MULTI block whose keys share a hash tag runs on its node as one transaction,
    beside plain commands for other nodes."""
    bulk = Bulk()
    bulk.add("SET", "plain:a", "1")
    bulk.add("MULTI")
    bulk.add("SADD", "dmp:x:{p1}:seen", "d1", "d2")
    bulk.add("HINCRBY", "dmp:x:{p1}:stats", "stored", 2)
    bulk.add("EXEC")
    bulk.add("SET", "plain:b", "2")
    replies = bulk.execute(cluster)
    assert replies[0] == b"OK" and replies[-1] == b"OK"
    assert replies[4] == [2, 2]
    assert cluster.hget("dmp:x:{p1}:stats", "stored") == "2"


def test_a_transaction_across_slots_is_refused_by_redis(cluster) -> None:
    """Keys of two slots in one MULTI: Redis Cluster refuses it (CROSSSLOT), nothing is
    applied, and the error is raised after every reply was read."""
    bulk = Bulk()
    bulk.add("MULTI")
    bulk.add("SET", "key:1", "a")
    bulk.add("SET", "key:2", "b")
    bulk.add("EXEC")
    with pytest.raises(redis_lib.ResponseError):
        bulk.execute(cluster)
    assert cluster.get("key:1") is None and cluster.get("key:2") is None
