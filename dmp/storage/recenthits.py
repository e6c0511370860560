"""Hits refused or set aside, per minute, for the last hour: what ``dmp status`` shows.

The counters in :mod:`dmp.storage.metrics` are totals since the start; a developer who
fixes a wrong domain wants to see the refusals stop. So every write of those totals that
holds a refusal (a ``dmp_hits_total`` outcome other than ok, a tag cookie the browser did
not send back, a bot, a hit without analytics consent) also adds to the hash of the
current minute, in the same pipeline or transaction: one HINCRBY per field and one
EXPIRE per write, whatever the number of hits behind it. Each minute's hash expires after
two hours; :func:`last_hour` sums the sixty newest.

A field is ``<collector>:<reason>``; reasons are ``dmp_hits_total``'s outcome labels,
plus the ones below for what is not an outcome of the door.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import redis

from dmp.storage import keyspace, metrics

BUCKET_SECONDS = 60
WINDOW_MINUTES = 60  # what last_hour sums
KEEP_SECONDS = 2 * 3600  # each minute's hash lives this long (past the window: no gaps)

OK = "ok"  # dmp_hits_total's outcome of an accepted hit: not kept here
BOT = "bot"  # stored flagged, never made a person (decided by the ingest worker)
NO_CONSENT = "no_consent"  # no analytics consent: counted only in aggregate (the worker)
COOKIE_NOT_RETURNED = "cookie_not_returned"  # the browser dropped dmp's cookie (the tag)

HITS = "dmp_hits_total"
COOKIE_COUNTER = "dmp_cookie_not_returned_total"  # counted by the tag, labelled by site
_TAG = "tag"

Add = Callable[..., Any]  # queues one command: Bulk.add, or a pipeline's execute_command


def minute_of(now: float) -> int:
    """Return the number of the minute (since the epoch) a wall-clock time falls in."""
    return int(now // BUCKET_SECONDS)


def recent_field(collector: str, reason: str) -> str:
    """Return the field of one collector's reason in a minute's hash."""
    return f"{collector}:{reason}"


def from_counters(counters: Mapping[str, int]) -> dict[str, int]:
    """Return the minute-hash fields that metric counter fields (as :func:`metrics.counter`
    writes them) add to: refused hits by collector and outcome, and cookies not returned."""
    found: dict[str, int] = {}
    for name, amount in counters.items():
        key = _recent_field_of(name)
        if key and amount:
            found[key] = found.get(key, 0) + amount
    return found


@lru_cache(maxsize=1024)
def _recent_field_of(name: str) -> str:
    """Return the minute-hash field a metric counter field adds to ('' for none): parsed
    once per field, since the tag and the Segment API ask on every request."""
    parsed = metrics.parse_counter(name)
    if parsed is None:
        return ""
    counter, labels = parsed
    if counter == HITS and labels.get("outcome", OK) != OK and "collector" in labels:
        return recent_field(labels["collector"], labels["outcome"])
    if counter == COOKIE_COUNTER:
        return recent_field(_TAG, COOKIE_NOT_RETURNED)
    return ""


def queue_counts(
    add: Add,
    fields: Mapping[str, int],
    now: float | None = None,
    key_of: Callable[[int], str] = keyspace.recent_hits,
) -> None:
    """Queue the HINCRBYs that add ``fields`` to the current minute's hash (``key_of``:
    an ingest partition's own, see keyspace.PartitionKeys), and its expiry (nothing
    without fields)."""
    if not fields:
        return
    key = key_of(minute_of(time.time() if now is None else now))
    for name, amount in fields.items():
        add("HINCRBY", key, name, amount)
    add("EXPIRE", key, KEEP_SECONDS)


def commands(counters: Mapping[str, int], now: float | None = None) -> list[tuple[Any, ...]]:
    """Return the commands that add metric ``counters``' refusals to the current minute."""
    queued: list[tuple[Any, ...]] = []
    queue_counts(lambda *args: queued.append(args), from_counters(counters), now)
    return queued


@dataclass(frozen=True, slots=True)
class RecentHits:
    """Refused and set-aside hits of a span, by reason and by collector."""

    by_reason: dict[str, int] = field(default_factory=dict)
    by_collector: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Return how many hits the span holds in all."""
        return sum(self.by_reason.values())

    def to_json(self) -> dict[str, Any]:
        """Return the record as ``dmp status --json`` prints it."""
        return {"by_reason": self.by_reason, "by_collector": self.by_collector}


def last_hour(r: redis.Redis, now: float | None = None) -> RecentHits:
    """Return the hits refused or set aside in the sixty minutes up to ``now``: the
    collectors' and every ingest partition's (two round trips; fields that are not
    ``collector:reason`` with a whole count are skipped)."""
    newest = minute_of(time.time() if now is None else now)
    minutes = range(newest - WINDOW_MINUTES + 1, newest + 1)
    key_ofs = [keyspace.recent_hits, *(p.recent for p in metrics.ingest_partitions(r))]
    with r.pipeline(transaction=False) as pipe:
        for key_of in key_ofs:
            for minute in minutes:
                pipe.hgetall(key_of(minute))
        buckets = pipe.execute()
    return summed(buckets)


def summed(buckets: Iterable[Mapping[Any, Any]]) -> RecentHits:
    """Return the sum of minute hashes (as HGETALL gives them) by reason and collector."""
    by_reason: dict[str, int] = {}
    by_collector: dict[str, dict[str, int]] = {}
    for bucket in buckets:
        for raw_name, raw_value in bucket.items():
            name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
            collector, sep, reason = name.partition(":")
            try:
                amount = int(raw_value)
            except ValueError:
                continue
            if not sep or not collector or not reason or amount <= 0:
                continue
            by_reason[reason] = by_reason.get(reason, 0) + amount
            per = by_collector.setdefault(collector, {})
            per[reason] = per.get(reason, 0) + amount
    return RecentHits(
        dict(sorted(by_reason.items())),
        {c: dict(sorted(per.items())) for c, per in sorted(by_collector.items())},
    )
