"""The ingest stream: collectors append hits, the worker's consumer group reads them."""

from __future__ import annotations

from collections.abc import Iterable

import redis

from dmp import keyspace, metrics
from dmp.records import Hit

FIELD = "h"  # each stream entry carries one field: the hit as JSON


def enqueue(r: redis.Redis, hits: Iterable[Hit], counters: dict[str, int], *, atomic: bool) -> None:
    """Append hits to the stream and bump counters in one round trip.

    With ``atomic`` the hits land all together or not at all (a Segment batch).
    """
    with r.pipeline(transaction=atomic) as pipe:
        for hit in hits:
            pipe.xadd(keyspace.STREAM, {FIELD: hit.to_json()})
        for field, amount in counters.items():
            metrics.incr(pipe, field, amount)
        pipe.execute()


def ensure_group(r: redis.Redis) -> None:
    """Create the worker's consumer group (and the stream) unless they exist."""
    try:
        r.xgroup_create(keyspace.STREAM, keyspace.GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def pending_count(r: redis.Redis) -> int:
    """Return how many hits wait to be stored (the worker trims what it has acked)."""
    return int(r.xlen(keyspace.STREAM))
