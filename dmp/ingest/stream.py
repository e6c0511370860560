"""The ingest stream: collectors append hits, the workers' consumer groups read them.

With ``DMP_STREAM_PARTITIONS=N`` the stream is N streams (``keyspace.partition``), each
on its own Redis Cluster slot and leased by one worker; :func:`partition_of` is the one
place that says which partition a hit goes to.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterable
from typing import Any

import redis
from redis.cluster import RedisCluster

from dmp.records import Hit
from dmp.storage import keyspace, metrics
from dmp.storage.bulk import Bulk

log = logging.getLogger(__name__)

FIELD = "h"  # each stream entry carries one field: the hit as JSON
_CONTROL_SITE = "dmp:control"  # dmp.people.control.CONTROL_SITE (not imported: a cycle)


def partition_of(hit: Hit, partitions: int) -> int:
    """Return the partition a hit goes to: a stable hash (crc32) of its first identifier
    in the order cookie uid, anonymousId, userId, email trait; partition 0 for control
    entries; the event id for a hit without identifiers (it only counts in aggregate)."""
    if partitions <= 1 or hit.site_id == _CONTROL_SITE:
        return 0
    email = hit.traits.get("email") if hit.traits else None
    key = hit.uid or hit.anonymous_id or hit.user_id or (email if isinstance(email, str) else "")
    return zlib.crc32((key or hit.event_id).encode()) % partitions


def partition_of_json(hit_json: str | bytes, partitions: int) -> int:
    """Return :func:`partition_of` for a hit as JSON (a spooled line); 0 if unreadable."""
    if partitions <= 1:
        return 0
    try:
        return partition_of(Hit.from_json(hit_json), partitions)
    except (ValueError, TypeError, KeyError):
        return 0  # the worker of partition 0 drops it as unreadable


def xadd_args(hit_json: str | bytes, partition: int = 0) -> tuple[str, str, str, str, str | bytes]:
    """Return the XADD command that appends one hit (as :meth:`Hit.to_json` gives it)."""
    return ("XADD", keyspace.partition(partition).stream, "*", FIELD, hit_json)


def enqueue(
    r: redis.Redis,
    hits: Iterable[Hit],
    counters: dict[str, int],
    *,
    atomic: bool,
    also: Iterable[tuple[Any, ...]] = (),
    partitions: int = 1,
) -> None:
    """Append hits to their partitions' streams and bump counters in one round trip (two
    on a Redis Cluster with ``atomic``).

    With ``atomic`` the hits of each partition land all together or not at all, and
    with the last of them the commands in ``also`` (an import remembers the rows it
    queued; on a Redis Cluster they and the counters follow the MULTIs). A MULTI cannot
    span cluster slots, so a batch spanning partitions is one MULTI per partition: a
    crash between two leaves some partitions' hits in. That is enough: the Segment API
    answers 200 only after all are in (else the client sends the batch again, and the
    worker drops the ones stored by their event ids), and an import remembers its rows
    only with or after the last MULTI (its event ids are row digests).
    """
    # Raw RESP in one write: redis-py's pipeline costs more CPU than the rest of a pixel hit.
    by_partition: dict[int, list[str]] = {}
    for hit in hits:
        by_partition.setdefault(partition_of(hit, partitions), []).append(hit.to_json())
    bulk = Bulk()
    if not atomic:
        for p, lines in by_partition.items():
            for line in lines:
                bulk.add(*xadd_args(line, p))
        _add_counters(bulk, counters, also)
        bulk.execute(r)
        return
    if isinstance(r, RedisCluster):
        _enqueue_on_cluster(r, by_partition, counters, also)
        return
    groups = list(by_partition.items()) or [(0, [])]
    for n, (p, lines) in enumerate(groups):
        bulk.add("MULTI")
        for line in lines:
            bulk.add(*xadd_args(line, p))
        if n == len(groups) - 1:
            _add_counters(bulk, counters, also)
        bulk.add("EXEC")
    bulk.execute(r)


def _enqueue_on_cluster(
    r: RedisCluster,
    by_partition: dict[int, list[str]],
    counters: dict[str, int],
    also: Iterable[tuple[Any, ...]],
) -> None:
    """Append each partition's hits in a MULTI of its own slot, then (only once they are
    all in) bump the counters and run ``also``: their keys are on other slots, which a
    cluster's MULTI refuses (docs/dev/redis-cluster-audit.md, C3)."""
    bulk = Bulk()
    for p, lines in by_partition.items():
        bulk.add("MULTI")
        for line in lines:
            bulk.add(*xadd_args(line, p))
        bulk.add("EXEC")
    for reply in bulk.execute(r):
        # An EXEC answers a list holding a refused command's error (Redis goes on).
        for answer in reply if isinstance(reply, list) else ():
            if isinstance(answer, redis.ResponseError):
                raise answer
    # After the hits, in this order, never before them:
    # - counters and the minute's recent hits are metrics: a crash right here loses
    #   counts, as a process crashing with counts in memory does;
    # - an import's row digests (SADD imported_rows): a crash right here makes the next
    #   import of the file queue these rows again, and the worker drops the copies by
    #   their event ids (row digests); written first, the rows would be lost for good;
    # - a person request's queued mark (SET control_queued): a crash right here leaves a
    #   request that the worker applies and reports all the same; written first, it
    #   could say "queued" of a request that is not on the stream.
    after = Bulk()
    _add_counters(after, counters, also)
    if len(after):
        after.execute(r)


def _add_counters(bulk: Bulk, counters: dict[str, int], also: Iterable[tuple[Any, ...]]) -> None:
    for field, amount in counters.items():
        bulk.add("HINCRBY", keyspace.METRICS, field, amount)
    for command in also:
        bulk.add(*command)


def ensure_group(r: redis.Redis, partitions: int = 1) -> None:
    """Create the workers' consumer group (and the stream) of every partition unless
    they exist, and record how many partitions there are (``keyspace.INGEST_PARTITIONS``)."""
    for p in range(partitions):
        ensure_partition_group(r, keyspace.partition(p))
    r.hset(keyspace.INGEST_PARTITIONS, "current", partitions)
    # Readers sum the counters of every partition ever used (see used_partitions).
    if int(r.hget(keyspace.INGEST_PARTITIONS, "most") or 0) < partitions:
        r.hset(keyspace.INGEST_PARTITIONS, "most", partitions)


def ensure_partition_group(r: redis.Redis, keys: keyspace.PartitionKeys) -> None:
    """Create one partition's consumer group (and its stream) unless they exist."""
    try:
        r.xgroup_create(keys.stream, keyspace.GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def used_partitions(r: redis.Redis) -> list[keyspace.PartitionKeys]:
    """Return the keys of every partition ever used, and the single stream of old."""
    return [keyspace.LEGACY, *metrics.ingest_partitions(r)]


def pending_counts(r: redis.Redis) -> dict[int, int]:
    """Return how many hits wait in each partition (-1: the single stream of old)."""
    parts = used_partitions(r)
    with r.pipeline(transaction=False) as pipe:
        for keys in parts:
            pipe.xlen(keys.stream)
        lengths = pipe.execute()
    return {k.index: int(n) for k, n in zip(parts, lengths, strict=True)}


def pending_count(r: redis.Redis) -> int:
    """Return how many hits wait to be stored (the worker trims what it has acked)."""
    return sum(pending_counts(r).values())
