"""Segment definitions in Redis, versioned: every change is a new version, none is lost.

Keys: ``dmp:segments`` (set of ids), ``dmp:segment:<id>`` (hash: name, version, updated,
definition as canonical JSON) and ``dmp:segment:<id>:versions`` (list of JSON
``{version, at, definition}``, oldest first).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis

from dmp.access import apikeys
from dmp.storage import keyspace
from segments.definition import SegmentDefinition, parse_definition
from segments.rules import RuleError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredSegment:
    """A segment as stored: its current definition and version."""

    definition: SegmentDefinition
    version: int
    updated: int  # ms


def apply_definitions(
    r: redis.Redis, found: list[SegmentDefinition]
) -> list[tuple[str, int, bool]]:
    """Store each definition; return ``(id, version, changed)``. Unchanged ones keep theirs."""
    out = []
    now = int(time.time() * 1000)
    for definition in found:
        key = keyspace.segment(definition.id)
        current = r.hmget(key, "definition", "version")
        text = definition.canonical()
        if current[0] == text:
            out.append((definition.id, int(current[1]), False))
            continue
        version = int(current[1] or 0) + 1
        entry = json.dumps({"version": version, "at": now, "definition": definition.source})
        with r.pipeline(transaction=True) as pipe:
            pipe.sadd(keyspace.SEGMENTS, definition.id)
            pipe.hset(
                key,
                mapping={
                    "definition": text,
                    "version": version,
                    "updated": now,
                    "name": definition.name,
                },
            )
            pipe.hdel(key, "deleted")
            pipe.rpush(keyspace.segment(definition.id, "versions"), entry)
            pipe.execute()
        out.append((definition.id, version, True))
    return out


@dataclass(frozen=True, slots=True)
class InvalidSegment:
    """A segment stored but no longer passing the checks (stored before one existed)."""

    id: str
    version: int
    error: str


def list_segments(r: redis.Redis) -> list[StoredSegment]:
    """Return every stored segment, by id (those no longer valid logged and left out)."""
    found, invalid = load_segments(r)
    for bad in invalid:
        log.error(
            "segment %s is stored but no longer valid (%s): skipped; PUT it again",
            bad.id,
            bad.error,
        )
    return found


def load_segments(r: redis.Redis) -> tuple[list[StoredSegment], list[InvalidSegment]]:
    """Return every stored segment that passes today's checks and every one that does
    not (with why), by id: one bad entry must not stop runs, lookups and lists of all
    the others, and a run keeps the members it had."""
    ids = sorted(r.smembers(keyspace.SEGMENTS))
    with r.pipeline(transaction=False) as pipe:
        for sid in ids:
            pipe.hmget(keyspace.segment(sid), "definition", "version", "updated")
        rows = pipe.execute()
    found, invalid = [], []
    for sid, (text, version, updated) in zip(ids, rows, strict=True):
        parsed = _parse(sid, text, version, updated)
        if isinstance(parsed, StoredSegment):
            found.append(parsed)
        elif parsed is not None:
            invalid.append(InvalidSegment(sid, int(version or 0), parsed))
    return found, invalid


def _parse(sid: str, text: str | None, version: str, updated: str) -> StoredSegment | str | None:
    """Return a stored definition, why it no longer passes the checks, or None (none)."""
    if not text:
        return None
    try:
        definition = parse_definition(json.loads(text), f"stored segment {sid}", new=False)
    except (RuleError, ValueError, RecursionError) as exc:
        return str(exc) if isinstance(exc, RuleError) else f"not readable: {exc}"[:300]
    return StoredSegment(definition, int(version), int(updated))


def _stored(sid: str, text: str | None, version: str, updated: str) -> StoredSegment | None:
    """Return a stored definition, or None (logged if it no longer passes the checks)."""
    parsed = _parse(sid, text, version, updated)
    if isinstance(parsed, str):
        log.error(
            "segment %s is stored but no longer valid (%s): skipped; PUT it again", sid, parsed
        )
        return None
    return parsed


def versions(r: redis.Redis, sid: str) -> list[dict[str, Any]]:
    """Return every version of a segment, oldest first (empty for an unknown id)."""
    return [json.loads(v) for v in r.lrange(keyspace.segment(sid, "versions"), 0, -1)]


def delete_segment(r: redis.Redis, sid: str) -> int | None:
    """Delete a segment (its versions stay, ending in a deletion; partner keys no longer
    share it); return the deletion's version, or None if there is no such segment. The
    next run empties its membership."""
    key = keyspace.segment(sid)
    with r.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(key)
            version = pipe.hget(key, "version")
            if not pipe.hget(key, "definition") or version is None:
                return None
            now, deleted = int(time.time() * 1000), int(version) + 1
            pipe.multi()
            pipe.srem(keyspace.SEGMENTS, sid)
            pipe.sadd(keyspace.SEGMENTS_DELETED, sid)
            pipe.hdel(key, "definition", "name")
            pipe.hset(key, mapping={"version": deleted, "updated": now, "deleted": now})
            pipe.rpush(
                keyspace.segment(sid, "versions"),
                json.dumps({"version": deleted, "at": now, "deleted": True}),
            )
            pipe.execute()
        except redis.WatchError:
            return delete_segment(r, sid)
    apikeys.unshare(r, sid)
    return deleted


def get_segment(r: redis.Redis, sid: str) -> StoredSegment | None:
    """Return one stored segment, or None."""
    text, version, updated = r.hmget(keyspace.segment(sid), "definition", "version", "updated")
    return _stored(sid, text, version, updated)
