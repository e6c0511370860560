"""Commands over keys of many Redis Cluster slots (identifier links, erased marks).

On one server they stay single commands; on a cluster redis-py splits them by slot
(``mget_nonatomic``, ``mset_nonatomic``), which gives up their atomicity: callers use
them only where each key stands alone (a link, a mark), never where keys must change
together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis
from redis.cluster import RedisCluster

RedisClient = redis.Redis | RedisCluster


def is_cluster(r: Any) -> bool:
    """Return whether ``r`` is a Redis Cluster client."""
    return isinstance(r, RedisCluster)


def get_many(r: RedisClient, keys: Sequence[str]) -> list[Any]:
    """Return the values of ``keys`` in order (None where missing): one MGET on one
    server, one per slot on a cluster."""
    if not keys:
        return []
    if isinstance(r, RedisCluster):
        return r.mget_nonatomic(list(keys))
    return r.mget(list(keys))


def set_many(r: RedisClient, values: Mapping[str, Any]) -> None:
    """Set every key to its value: one MSET on one server, one per slot on a cluster."""
    if not values:
        return
    if isinstance(r, RedisCluster):
        r.mset_nonatomic(dict(values))
    else:
        r.mset(dict(values))
