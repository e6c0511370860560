"""The worker's reads from the ingest stream, each pending entry read once.

After a (re)start it takes over the entries other consumers left pending (a dead
worker's), reads every pending entry of its own once, in id order, then new ones; the
next batch of new ones can be asked for while this one is handled.
"""

from __future__ import annotations

from typing import Any

import redis

from dmp.ingest import stream
from dmp.storage import keyspace
from dmp.storage.bulk import Bulk, InFlight


class StreamReader:
    """Batches of (stream id, hit JSON) for one consumer of the ingest group."""

    def __init__(
        self, r: redis.Redis, consumer: str, count: int, stream_key: str = keyspace.STREAM
    ) -> None:
        self.r = r
        self.stream = stream_key  # the partition's stream
        self.consumer = consumer
        self.count = count
        self._prefetch: InFlight | None = None  # the next XREADGROUP, already asked for
        self._own_cursor: str | None = "0"  # reading back our own pending entries first

    def restart(self) -> None:
        """Forget what was asked for, take leftovers over and read our pending entries again."""
        self.drop_prefetch()
        self._claim_leftovers()
        self._own_cursor = "0"

    def read(self, block_ms: int) -> tuple[list[tuple[str, bytes | None]], bool]:
        """Return the next batch, and whether it holds new entries (not re-read ones)."""
        if self._own_cursor is not None:
            entries = self._xreadgroup(self._own_cursor, 0)
            self._own_cursor = entries[-1][0] if entries else None
            if entries:
                return entries, False
        inflight, self._prefetch = self._prefetch, None
        if inflight is None:
            bulk = Bulk()
            bulk.add(*self._xreadgroup_args(">", block_ms))
            inflight = bulk.send(self.r)
        return self._parse_entries(inflight.wait()[0]), True

    def _claim_leftovers(self) -> None:
        """Make every entry other consumers left pending ours, to be read by our own cursor.

        Holding the lease means every other consumer is gone. XCLAIM JUSTID (not XAUTOCLAIM,
        which also takes our own entries, read again by our cursor, and in Redis 6.2 answers
        an entry deleted while pending without its id, so it could never be acked) moves
        each one id by id; our cursor then reads them all once, deleted ones included.
        """
        for consumer in self.r.xinfo_consumers(self.stream, keyspace.GROUP):
            if consumer["name"] == self.consumer or not consumer["pending"]:
                continue
            while found := self.r.xpending_range(
                self.stream, keyspace.GROUP, "-", "+", self.count, consumer["name"]
            ):
                ids = [p["message_id"] for p in found]
                self.r.xclaim(self.stream, keyspace.GROUP, self.consumer, 0, ids, justid=True)

    def ask_new(self, block_ms: int) -> None:
        """Ask for the next batch of new entries now; :meth:`read` takes its answer."""
        bulk = Bulk()
        bulk.add(*self._xreadgroup_args(">", block_ms))
        self._prefetch = bulk.send(self.r)

    def drop_prefetch(self) -> None:
        """Read and forget an asked-for batch; its entries stay pending for the next start."""
        if self._prefetch is not None:
            inflight, self._prefetch = self._prefetch, None
            inflight.wait()

    def _xreadgroup_args(self, start: str, block_ms: int) -> tuple[str | int, ...]:
        block = ("BLOCK", block_ms) if block_ms else ()
        return (
            "XREADGROUP",
            "GROUP",
            keyspace.GROUP,
            self.consumer,
            "COUNT",
            self.count,
            *block,
            "STREAMS",
            self.stream,
            start,
        )

    def _xreadgroup(self, start: str, block_ms: int) -> list[tuple[str, bytes | None]]:
        """Return (stream id, hit JSON) pairs; raw, since redis-py's parsing costs µs each."""
        bulk = Bulk()
        bulk.add(*self._xreadgroup_args(start, block_ms))
        return self._parse_entries(bulk.execute(self.r)[0])

    @staticmethod
    def _parse_entries(reply: Any) -> list[tuple[str, bytes | None]]:
        if not reply:
            return []
        field = stream.FIELD.encode()
        out = []
        # RESP3 answers a map {stream: entries}, RESP2 a list [[stream, entries]].
        found = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
        for sid, fields in found:
            data = None  # an entry deleted while pending comes back without fields
            if fields:
                data = dict(zip(fields[::2], fields[1::2], strict=True)).get(field)
            out.append((sid.decode(), data))
        return out
