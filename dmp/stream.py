"""The ingest stream: collectors append hits, the worker's consumer group reads them."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import redis

from dmp import keyspace
from dmp.bulk import Bulk
from dmp.records import Hit

log = logging.getLogger(__name__)

FIELD = "h"  # each stream entry carries one field: the hit as JSON


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
        bulk.add("XADD", keyspace.STREAM, "*", FIELD, hit.to_json())
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


class Appender:
    """Appends hits without waiting for Redis's answer: the pixel's path.

    A synchronous round trip to Redis costs a pixel hit about as much as all the rest of
    its work. Once ``sendall`` returns, the hit sits in the kernel's socket buffer towards
    Redis and reaches it even if this process dies; that is as durable as an answered
    XADD under Redis's own ``appendfsync everysec``. Each thread keeps its own connection.
    Answers are read back in bunches, once they are there, so errors are still seen
    (logged and counted as lost), and a stalled Redis slows the sender down instead of
    growing a backlog without bound. Metric counters are summed here and sent once a
    second (a killed process loses at most that second of counts, never a hit).
    """

    READ_EVERY = 64  # unread answers that make the sender look for them
    MAX_UNREAD = 10_000  # unread answers that make the sender wait for them
    COUNT_SECONDS = 1.0

    def __init__(self, r: redis.Redis) -> None:
        self._pool = r.connection_pool
        self._local = threading.local()
        self.lost = 0  # hits Redis refused (read back from its answers)

    def _state(self) -> dict[str, Any]:
        state = self._local.__dict__
        if not state:
            state.update(conn=None, unread=0, counts=Counter(), next_count=0.0)
        return state

    def append(self, hits: list[Hit], counters: dict[str, int]) -> None:
        """Send the hits' XADDs (and due counter sums); raise redis.RedisError if Redis is gone."""
        state = self._state()
        state["counts"].update(counters)
        bulk = Bulk()
        for hit in hits:
            bulk.add("XADD", keyspace.STREAM, "*", FIELD, hit.to_json())
        now = time.monotonic()
        if now >= state["next_count"]:
            state["next_count"] = now + self.COUNT_SECONDS
            self._add_counts(bulk, state)
        self._send(bulk, state)

    def sync(self) -> None:
        """Send the counter sums and wait until Redis answered all this thread sent."""
        state = self._state()
        bulk = Bulk()
        self._add_counts(bulk, state)
        self._send(bulk, state)
        while state["unread"]:
            self._read_one(state)

    @staticmethod
    def _add_counts(bulk: Bulk, state: dict[str, Any]) -> None:
        for field, amount in state["counts"].items():
            bulk.add("HINCRBY", keyspace.METRICS, field, amount)
        state["counts"].clear()

    def _send(self, bulk: Bulk, state: dict[str, Any]) -> None:
        count = len(bulk)
        if not count:
            return
        if state["conn"] is None:
            state["conn"], state["unread"] = self._pool.make_connection(), 0
        conn = state["conn"]
        try:
            conn.send_packed_command([bulk.packed()], check_health=False)
            state["unread"] += count
            if state["unread"] >= self.READ_EVERY:
                while state["unread"] and (
                    state["unread"] > self.MAX_UNREAD or conn.can_read(timeout=0)
                ):
                    self._read_one(state)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            conn.disconnect()
            state["conn"] = None  # the next hit reconnects
            raise

    def _read_one(self, state: dict[str, Any]) -> None:
        try:
            state["conn"].read_response(disable_decoding=True)
        except redis.ResponseError as exc:
            self.lost += 1
            log.error("Redis refused a pixel hit: %s", exc)
        state["unread"] -= 1
