"""The event log: Parquet files partitioned by UTC day, each event stored exactly once.

A flush commits in three steps so that a crash at any point neither loses nor doubles
an event:

1. an *intent* (every file name, stream id, event digest and counter of the flush) is
   written to Redis;
2. each file is written to a temporary name, fsynced and renamed into
   ``events/dt=YYYY-MM-DD/``;
3. one MULTI marks the digests seen, adds the counters, acks and deletes the stream
   entries and drops the intent.

On start, :meth:`EventLog.recover` finishes every intent whose files all exist and
undoes the others (their entries are still pending and get read again).
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import redis

from dmp.ingest.useragent import parse_agent
from dmp.records import EVENT_SCHEMA, Hit, dump_json
from dmp.storage import keyspace, recenthits
from dmp.storage.bulk import Bulk
from dmp.storage.parquetfiles import remove_written, write_parquet_files

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
COLUMNS = EVENT_SCHEMA.names


def event_digest(site_id: str, event_id: str) -> str:
    """Return the short digest under which an event id counts as seen (per site)."""
    return hashlib.blake2b(f"{site_id}\x1f{event_id}".encode(), digest_size=10).hexdigest()


def utc_day(ms: int) -> str:
    """Return the UTC day of a ms timestamp as YYYY-MM-DD."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


class EventBuffer:
    """Events and side effects waiting for the next flush."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []  # rows in EVENT_SCHEMA's column order
        self.stream_ids: list[str] = []  # every entry this flush acks, stored or not
        self.digests: set[str] = set()
        self.aggregates: Counter[tuple[str, str, str]] = Counter()  # (site, day, field) -> n
        self.stats: Counter[str] = Counter()
        self.metrics: Counter[str] = Counter()
        self.recent: Counter[str] = Counter()  # dmp.storage.recenthits fields (bots, ...)
        self.started = 0.0
        self.number = 0  # given when its rows are first handed to the live lane (livefeed)

    @property
    def rows(self) -> int:
        """Return how many events wait to be written."""
        return len(self.events)

    @property
    def entries(self) -> int:
        """Return how many stream entries wait to be acked."""
        return len(self.stream_ids)

    def age(self) -> float:
        """Return seconds since the first entry joined the buffer (0 when empty)."""
        return time.monotonic() - self.started if self.stream_ids else 0.0

    def take(self, stream_id: str, digest: str | None) -> None:
        """Note an entry to ack at the flush (and its event digest, if it has one)."""
        if not self.stream_ids:
            self.started = time.monotonic()
        self.stream_ids.append(stream_id)
        if digest:
            self.digests.add(digest)


def rows_table(rows: list[tuple[Any, ...]]) -> pa.Table:
    """Return event rows (tuples in EVENT_SCHEMA's column order) as a table of it."""
    if not rows:
        return EVENT_SCHEMA.empty_table()
    columns = list(zip(*rows, strict=True))  # rows to columns, in C
    return pa.Table.from_arrays(
        [pa.array(col, type=f.type) for col, f in zip(columns, EVENT_SCHEMA, strict=True)],
        schema=EVENT_SCHEMA,
    )


class LeaseLost(RuntimeError):
    """The worker's lease passed to another worker: its flush was abandoned, not stored."""


class EventLog:
    """The Parquet event log under ``root`` and its exactly-once bookkeeping in Redis."""

    def __init__(
        self,
        r: redis.Redis,
        root: Path,
        dedup_days: int,
        keys: keyspace.PartitionKeys | None = None,
    ) -> None:
        self.r = r
        self.root = root
        self.dedup_days = dedup_days
        # The partition whose stream, digests and counters it commits.
        self.keys = keys or keyspace.partition(0)
        # The single stream of old stored events whose replays must still count as seen.
        self.legacy_seen = False
        self.fence: tuple[str, str] | None = None  # (lease key, token) commits must hold
        self._leftovers: list[tuple[str, list[Path]]] = []  # failed attempts not yet removed

    def _seen_keys(self) -> list[str]:
        today = datetime.now(UTC).date()
        days = [(today - timedelta(days=n)).strftime("%Y%m%d") for n in range(self.dedup_days + 1)]
        keys = [self.keys.seen(day) for day in days]
        if self.legacy_seen and self.keys is not keyspace.LEGACY:
            keys += [keyspace.LEGACY.seen(day) for day in days]
        return keys

    def check_legacy(self) -> None:
        """Look once (at a start) whether the single stream of old stored events lately:
        their replays are looked up there too, until those sets expire."""
        days = [
            (datetime.now(UTC).date() - timedelta(days=n)).strftime("%Y%m%d")
            for n in range(self.dedup_days + 1)
        ]
        self.legacy_seen = bool(self.r.exists(*(keyspace.LEGACY.seen(d) for d in days)))

    def seen(self, digests: list[str]) -> list[bool]:
        """Return, per digest, whether its event was stored in the last ``dedup_days`` days."""
        if not digests:
            return []
        bulk = Bulk()
        self.ask_seen(bulk, digests)
        return self.seen_in(bulk.execute(self.r))

    def ask_seen(self, bulk: Bulk, digests: list[str]) -> int:
        """Queue the dedup check of ``digests``; return how many replies it will take."""
        keys = self._seen_keys() if digests else []
        for key in keys:
            bulk.add("SMISMEMBER", key, *digests)
        return len(keys)

    @staticmethod
    def seen_in(answers: list[list[int]]) -> list[bool]:
        """Return the per-digest verdicts of the replies :meth:`ask_seen` asked for."""
        return [any(flags) for flags in zip(*answers, strict=True)] if answers else []

    def flush(self, buf: EventBuffer) -> list[Path]:
        """Write the buffer's events durably, then commit its acks and counters."""
        if not buf.stream_ids:
            return []
        # The partition in the name: files of partitions flushed the same second differ.
        part = f"p{self.keys.index}-" if self.keys.index >= 0 else ""
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{part}{secrets.token_hex(4)}"
        tables = self._tables_by_day(buf)
        finals = [self.root / f"dt={day}" / f"part-{name}.parquet" for day in tables]
        payload = {
            "files": [str(p) for p in finals],
            "ids": buf.stream_ids,
            "digests": sorted(buf.digests),
            "aggregates": [[s, d, f, n] for (s, d, f), n in buf.aggregates.items()],
            "stats": {**buf.stats, "events_stored": buf.rows},
            "metrics": dict(buf.metrics),
            "recent": dict(buf.recent),
        }
        self._discard_leftovers()
        try:
            if finals:
                self.r.set(self.keys.intent(name), json.dumps(payload))
                self.r.sadd(self.keys.intents, name)
                self._write(name, list(tables.values()), finals)
            self._commit(name, payload)
        except LeaseLost:
            # What was written goes; the entries stay unacked for the holder to re-read.
            self._abandon(name, finals)
            raise LeaseLost(f"event log flush {name} abandoned: the lease is gone") from None
        return finals

    def _write(self, name: str, tables: list[pa.Table], finals: list[Path]) -> None:
        """Write a flush's files; if the folder fails (read-only, full), take the attempt
        back (files and intent) so that the same buffer can be flushed again, and raise."""
        try:
            write_parquet_files(tables, finals)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) and not self._holds_lease():
                # Files vanishing mid-write: a new lease holder's recovery undid this flush.
                raise LeaseLost(f"event log flush {name}: the lease is not ours") from exc
            self._leftovers.append((name, finals))
            self._discard_leftovers()
            raise

    def _discard_leftovers(self) -> None:
        """Remove failed flush attempts (files, then intent): none may be recovered later
        beside the retry that stores the same events. Raises OSError while one cannot be."""
        while self._leftovers:
            name, finals = self._leftovers[0]
            self._discard(name, finals)
            self._leftovers.pop(0)

    def _tables_by_day(self, buf: EventBuffer) -> dict[str, pa.Table]:
        if not buf.rows:
            return {}
        table = rows_table(buf.events)
        at = COLUMNS.index("timestamp")
        stamps = [row[at] for row in buf.events]
        days = [ms // DAY_MS for ms in stamps]
        if min(days) == max(days):
            return {utc_day(stamps[0]): table}
        day_array = pa.array(days)
        return {
            utc_day(day * DAY_MS): table.filter(pc.equal(day_array, day))
            for day in sorted(set(days))
        }

    def _commit(self, name: str, payload: dict[str, Any]) -> None:
        """Record a flush's digests, counters and acks in one MULTI: all of it or none.

        With a ``fence`` (the worker's lease key and token) the MULTI runs only while the
        lease is still this worker's (WATCH): a worker that stalled past its lease cannot
        ack what its successor has re-read. Its own renewals touch the key; then it checks
        again.

        Every key it touches is its partition's (``{p<n>}``), so on a Redis Cluster the
        WATCH and the MULTI run on one slot. Not so for the single stream of earlier
        versions (``keyspace.LEGACY``: untagged keys, fenced by partition 0's lease): it
        commits on one Redis server only, which is where it can exist (a cluster is
        loaded from a keyspace already renamed, see dmp.storage.keymigration).
        """
        if self.fence is None:
            bulk = Bulk()
            bulk.add("MULTI")
            self._queue_commit(bulk.add, name, payload)
            bulk.add("EXEC")
            failed = [r for r in bulk.execute(self.r)[-1] or [] if isinstance(r, Exception)]
            if failed:
                raise redis.ResponseError(f"event log commit {name} failed: {failed[0]}")
            return
        key, token = self.fence
        for _ in range(20):
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)
                    held = pipe.get(key)
                    if (held.decode() if isinstance(held, bytes) else held) != token:
                        raise LeaseLost(f"event log commit {name}: the lease is not ours")
                    pipe.multi()
                    self._queue_commit(pipe.execute_command, name, payload)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue
        raise LeaseLost(f"event log commit {name}: the lease kept changing")

    def _queue_commit(self, add: Any, name: str, payload: dict[str, Any]) -> None:
        keys = self.keys
        seen_key = self._seen_keys()[0]
        ids = payload["ids"]
        if payload["digests"]:
            add("SADD", seen_key, *payload["digests"])
            add("EXPIRE", seen_key, (self.dedup_days + 2) * 86400)
        for entry in payload["aggregates"]:
            if len(entry) == 3:  # intents of older versions name the key
                add("HINCRBY", *entry)
                continue
            site_id, day, field, amount = entry
            add("HINCRBY", keys.aggregate(site_id, day), field, amount)
        for field, amount in payload["stats"].items():
            add("HINCRBY", keys.stats, field, amount)
        for field, amount in payload["metrics"].items():
            add("HINCRBY", keys.metrics, field, amount)
        # (``recent`` is missing from intents of older versions.)
        recenthits.queue_counts(add, payload.get("recent", {}), key_of=keys.recent)
        for start in range(0, len(ids), 10_000):
            chunk = ids[start : start + 10_000]
            add("XACK", keys.stream, keyspace.GROUP, *chunk)
            add("XDEL", keys.stream, *chunk)
        add("DEL", keys.intent(name))
        add("SREM", keys.intents, name)

    def _holds_lease(self) -> bool:
        if self.fence is None:
            return True
        held = self.r.get(self.fence[0])
        return (held.decode() if isinstance(held, bytes) else held) == self.fence[1]

    def _abandon(self, name: str, finals: list[Path]) -> None:
        """Remove a flush that may not be committed, unless a recovery finished it."""
        if self.r.get(keyspace.eventlog_outcome(name)) in (b"finished", "finished"):
            return  # the lease's new holder committed these very files
        self._discard(name, finals)

    def _discard(self, name: str, finals: list[Path]) -> None:
        """Remove an uncommitted flush's files, then its intent (kept if a file stays)."""
        for path in finals:
            remove_written(path)
        self.r.delete(self.keys.intent(name))
        self.r.srem(self.keys.intents, name)

    def recover(self) -> tuple[int, int]:
        """Finish or undo flushes a crash interrupted; return (finished, undone)."""
        finished = undone = 0
        for name in sorted(self.r.smembers(self.keys.intents)):
            raw = self.r.get(self.keys.intent(name))
            payload = json.loads(raw) if raw else None
            files = [Path(p) for p in payload["files"]] if payload else []
            if payload and all(p.exists() for p in files):
                self._commit(name, payload)
                self.r.set(keyspace.eventlog_outcome(name), "finished", ex=86400)
                finished += 1
                log.warning("event log: finished interrupted flush %s (%d files)", name, len(files))
                continue
            for path in files:
                remove_written(path)
            self.r.delete(self.keys.intent(name))
            self.r.srem(self.keys.intents, name)
            self.r.set(keyspace.eventlog_outcome(name), "undone", ex=86400)
            undone += 1
            log.warning("event log: undid interrupted flush %s; its events will be re-read", name)
        return finished, undone


def event_row(hit: Hit, person_id: str | None) -> tuple[Any, ...]:
    """Return the event-log row of a stored hit, in EVENT_SCHEMA's column order."""
    agent = parse_agent(hit.user_agent)
    return (
        hit.event_id,
        hit.site_id,
        person_id,
        hit.source,
        hit.type,
        hit.event,
        hit.channel,
        hit.timestamp,
        hit.received_at,
        hit.uid or None,
        hit.anonymous_id or None,
        hit.user_id or None,
        hit.previous_id or None,
        hit.group_id or None,
        hit.url or None,
        hit.referrer or None,
        hit.title or None,
        hit.topics,
        dump_json(hit.properties) if hit.properties else None,
        dump_json(hit.traits) if hit.traits else None,
        [c for c, granted in sorted(hit.consent.items()) if granted],
        hit.ip or None,
        hit.user_agent or None,
        agent.browser or None,
        agent.os or None,
        agent.device,
        agent.is_bot,
    )


def scan_events(root: Path, files: list[str] | None = None) -> pl.LazyFrame:
    """Return the whole event log (or its ``files``, relative to ``root``) as a lazy frame
    (with the ``dt`` partition column)."""
    found = sorted(root.glob("dt=*/part-*.parquet")) if files is None else files
    if not found:
        return pl.LazyFrame(schema=pl.from_arrow(EVENT_SCHEMA.empty_table()).schema)
    if files is not None:
        return pl.scan_parquet([root / f for f in files], hive_partitioning=True)
    return pl.scan_parquet(root / "dt=*" / "part-*.parquet", hive_partitioning=True)
