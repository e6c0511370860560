"""Retention: which day partitions of the event log are past ``retain_events_days``, and
the cookie-only persons not seen for ``retain_anonymous_days``, forgotten in Redis.

A person expires when nothing ever identified them: tier ``low``, no email, and only
cookie (``uid``) and Segment ``anon`` identifiers, with their last touchpoint (or, with
none, their first sighting) older than the cut-off. Every key of theirs goes (the
facets persons have), with the identifier keys that still lead to
them, their tombstones (persons merged into them), their lookup-set memberships and
the live lane's note of them. Their person ids and identifiers join
``keyspace.ERASURE_PENDING``, so that compaction drops their rows from every file, and
the worker's identity cache is dropped (``keyspace.WORKER_EPOCH``).

Each person's own keys go in one transaction that watches their profile, timeline and
identifiers: one who comes back meanwhile (the worker writes there) is kept; the rest
(other Redis Cluster slots) follows in steps from an intent, finished after a crash. This is
``dmp.people.removal`` for many persons at once: that one also deletes the
merge-log entries naming the person, a scan of the whole log per person, which an expiry
of thousands cannot afford (the log is capped, and names only person ids).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import redis

from dmp.ingest.erasures import person_member
from dmp.ingest.eventlog import DAY_MS, utc_day
from dmp.people.identity import Identifier, IdKind, id_keys
from dmp.people.merges import once
from dmp.people.profiles import ARCHIVED_FACETS, FACETS, archived
from dmp.people.removal import DEL_IF_OWNER
from dmp.records import Tier, dump_json
from dmp.storage import keyspace

log = logging.getLogger(__name__)

ANONYMOUS_KINDS = frozenset({IdKind.UID.value, IdKind.ANON.value})
SCAN_COUNT = 1000


def old_days(days: list[str], retain_days: int, now_ms: int) -> list[str]:
    """Return the day folders (``dt=YYYY-MM-DD``) older than ``retain_days`` before now
    (none when ``retain_days`` is 0)."""
    if retain_days <= 0:
        return []
    cutoff = utc_day(now_ms - retain_days * DAY_MS)
    return [d for d in days if d.removeprefix("dt=") < cutoff]


def expire_anonymous(r: redis.Redis, retain_days: int, now_ms: int) -> list[str]:
    """Forget cookie-only persons last seen more than ``retain_days`` ago (none when 0);
    return their person ids."""
    if retain_days <= 0:
        return []
    finish_expiries(r)
    cutoff = now_ms - retain_days * DAY_MS
    candidates = _candidates(r, cutoff)
    if not candidates:
        return []
    tombstones = _tombstones(r, candidates)
    expired = [pid for pid in candidates if _expire(r, pid, cutoff, tombstones.get(pid, set()))]
    if expired:
        r.incr(keyspace.WORKER_EPOCH)  # the worker caches identities: it must read them again
        log.info(
            "retention: forgot %d cookie-only persons not seen since %s",
            len(expired),
            utc_day(cutoff),
        )
    return expired


def finish_expiries(r: redis.Redis) -> int:
    """Finish the expiries a crash cut short (their profile gone) and drop those that never
    got that far; return how many were finished."""
    done = 0
    for pid, kept in r.hgetall(keyspace.RETENTION_INTENTS).items():
        if r.exists(keyspace.person(pid)):  # not removed: nothing happened yet
            r.hdel(keyspace.RETENTION_INTENTS, pid)
            continue
        _forget_rest(r, pid, json.loads(kept))
        done += 1
    return done


def _chunks(items: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _candidates(r: redis.Redis, cutoff: int) -> list[str]:
    """Return the persons that look expired (checked again, watched, when removed)."""
    found = r.scan_iter(match=keyspace.person_pattern(), count=SCAN_COUNT, _type="HASH")
    out: list[str] = []
    for chunk in _chunks((keyspace.person_id_of(k) for k in found), SCAN_COUNT):
        with r.pipeline(transaction=False) as pipe:
            for pid in chunk:
                pipe.hmget(keyspace.person(pid), "tier", "email", "first_seen")
                pipe.zrevrange(keyspace.person(pid, "touchpoints"), 0, 0, withscores=True)
            replies = pipe.execute()
        for i, pid in enumerate(chunk):
            (tier, email, first), last = replies[2 * i], replies[2 * i + 1]
            if tier == Tier.LOW.value and not email and 0 < _last_seen(first, last) < cutoff:
                out.append(pid)
    return out


def _last_seen(first: str | None, last: list[tuple[str, float]]) -> int:
    return int(last[0][1]) if last else int(first or 0)


def _tombstones(r: redis.Redis, pids: list[str]) -> dict[str, set[str]]:
    """Return, per person, the ids merged into them (their tombstones)."""
    with r.pipeline(transaction=False) as pipe:
        for pid in pids:
            pipe.smembers(keyspace.person(pid, "merged"))
        return {pid: set(m) for pid, m in zip(pids, pipe.execute(), strict=True) if m}


def _expire(r: redis.Redis, pid: str, cutoff: int, merged: set[str]) -> bool:
    """Remove one person if they are still expired; return whether they were.

    The person's own keys go in one transaction that watches their profile, timeline and
    identifiers (one slot): one who comes back meanwhile (the worker writes there) is
    kept. What lies on other slots (links, tombstones, lookup sets, counters) follows,
    from an intent kept before (``keyspace.RETENTION_INTENTS``).
    """
    profile, timeline = keyspace.person(pid), keyspace.person(pid, "touchpoints")
    idents_key = keyspace.person(pid, "identifiers")
    with r.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(profile, timeline, idents_key)
            tier, email, first = pipe.hmget(profile, "tier", "email", "first_seen")
            texts = pipe.smembers(idents_key)
            idents = [i for t in texts if (i := _identifier(t)) is not None]
            seen = _last_seen(first, pipe.zrevrange(timeline, 0, 0, withscores=True))
            if (
                tier != Tier.LOW.value
                or email
                or len(idents) < len(texts)
                or any(i.kind.value not in ANONYMOUS_KINDS for i in idents)
                or not 0 < seen < cutoff
            ):
                pipe.unwatch()
                return False
            plan = {
                "identifiers": sorted(i.text for i in idents),
                "segments": sorted(pipe.smembers(keyspace.person(pid, "segments"))),
                "merged": sorted(merged),
            }
            r.hset(keyspace.RETENTION_INTENTS, pid, dump_json(plan))  # {dmp}: another slot
            pipe.multi()
            pipe.delete(*_person_keys(pid))
            pipe.execute()
        except redis.WatchError:  # written meanwhile: they came back
            r.hdel(keyspace.RETENTION_INTENTS, pid)
            return False
    _forget_rest(r, pid, plan)
    return True


def _person_keys(pid: str) -> list[str]:
    """Return every key a person may have (profile, facets, archives)."""
    facets = ("", *FACETS, *(archived(f) for f in ("", *ARCHIVED_FACETS)))
    return [keyspace.person(pid, f) for f in facets]


def _forget_rest(r: redis.Redis, pid: str, plan: dict[str, Any]) -> None:
    """After the person's own keys went: their links, tombstones and lookup sets, then
    the counters and marks in one ``{dmp}`` MULTI with the intent's removal (once)."""
    del_if = r.register_script(DEL_IF_OWNER)
    idents = [Identifier.from_text(t) for t in plan["identifiers"]]
    for key in (k for i in idents for k in id_keys(i)):
        del_if(keys=[key], args=[pid])  # only a link that still leads to them
    for old in plan["merged"]:
        r.delete(*_person_keys(old))  # one person's keys: one slot
    if plan["segments"]:
        with r.pipeline(transaction=False) as pipe:
            for sid in plan["segments"]:
                pipe.srem(keyspace.segment(sid, "members"), pid)
            pipe.execute()
    gone = [person_member(p) for p in (pid, *plan["merged"])]

    def write(pipe: Any) -> None:
        pipe.zrem(keyspace.SEGMENTS_LIVE, pid)
        pipe.sadd(keyspace.MATRIX_TOUCHED, pid)  # the next build drops their row
        pipe.sadd(keyspace.ERASURE_PENDING, *gone, *plan["identifiers"])
        pipe.hincrby(keyspace.STATS, f"persons:{Tier.LOW.value}", -1)
        pipe.hdel(keyspace.RETENTION_INTENTS, pid)

    intents = keyspace.RETENTION_INTENTS
    once(r, intents, lambda pipe: bool(pipe.hexists(intents, pid)), write)


def _identifier(text: str) -> Identifier | None:
    try:
        return Identifier.from_text(text)
    except ValueError:  # a kind this version does not know: not a cookie, keep them
        return None
