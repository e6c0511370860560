"""The ingest stream: collectors append hits, the worker's consumer group reads them."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import redis

from dmp.records import Hit
from dmp.storage import keyspace
from dmp.storage.bulk import Bulk

log = logging.getLogger(__name__)

FIELD = "h"  # each stream entry carries one field: the hit as JSON


def xadd_args(hit_json: str | bytes) -> tuple[str, str, str, str, str | bytes]:
    """Return the XADD command that appends one hit (as :meth:`Hit.to_json` gives it)."""
    return ("XADD", keyspace.STREAM, "*", FIELD, hit_json)


def enqueue(
    r: redis.Redis,
    hits: Iterable[Hit],
    counters: dict[str, int],
    *,
    atomic: bool,
    also: Iterable[tuple[Any, ...]] = (),
) -> None:
    """Append hits to the stream and bump counters in one round trip.

    With ``atomic`` the hits land all together or not at all (a Segment batch), and
    with them the commands in ``also`` (an import remembers the rows it queued).
    """
    # Raw RESP in one write: redis-py's pipeline costs more CPU than the rest of a pixel hit.
    bulk = Bulk()
    if atomic:
        bulk.add("MULTI")
    for hit in hits:
        bulk.add(*xadd_args(hit.to_json()))
    for field, amount in counters.items():
        bulk.add("HINCRBY", keyspace.METRICS, field, amount)
    for command in also:
        bulk.add(*command)
    if atomic:
        bulk.add("EXEC")
    bulk.execute(r)


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
