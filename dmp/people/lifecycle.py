"""Recorded lifecycle stages in Redis: what sales set, and the model's moves.

Each person's records are a list ``dmp:person:{pid}:stages`` of JSON
``{"stage", "at" (ms), "source", "by"}``, oldest first. The matrix reads them all as
``segments.stages.STAGE_HISTORY_SCHEMA`` and takes the latest by its as-of time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import redis

from dmp.people.identity import Identifier
from dmp.people.profiles import follow
from dmp.records import Stage
from dmp.storage import keyspace, multikey


def stage_record(stage: Stage, at_ms: int, source: str, by: str = "") -> str:
    """Return the stored form of one stage record."""
    return json.dumps({"stage": stage.value, "at": at_ms, "source": source, "by": by})


def record_stage(
    r: redis.Redis, pid: str, stage: Stage, *, source: str, by: str = "", at_ms: int = 0
) -> dict[str, Any]:
    """Record that ``pid`` entered ``stage`` (now, unless ``at_ms``); return the record."""
    at = at_ms or int(time.time() * 1000)
    # Two slots, in this order: a crash between them costs a needless refold, never a
    # stage the next incremental build misses.
    r.sadd(keyspace.MATRIX_TOUCHED, pid)  # the next incremental build refolds them
    r.rpush(keyspace.person(pid, "stages"), stage_record(stage, at, source, by))
    return {"stage": stage.value, "at": at, "source": source, "by": by}


def record_stages(
    r: redis.Redis, records: Iterable[tuple[str, str, int, str]], *, touched: bool = False
) -> int:
    """Record many ``(person_id, stage, at_ms, source)`` at once; return how many.

    With ``touched`` the persons are marked for the next incremental build (stages set
    outside it); the build's own records need no mark.
    """
    records = list(records)
    if touched and records:  # marked first (a cluster pipeline keeps order per node only)
        r.sadd(keyspace.MATRIX_TOUCHED, *{pid for pid, _, _, _ in records})
    with r.pipeline(transaction=False) as pipe:
        for pid, stage, at, source in records:
            pipe.rpush(keyspace.person(pid, "stages"), stage_record(Stage(stage), at, source))
        pipe.execute()
    return len(records)


def parse_records(raw: Iterable[str | bytes]) -> list[dict[str, Any]]:
    """Return the records of a stages list, skipping any that cannot be read."""
    out = []
    for item in raw:
        try:
            rec = json.loads(item)
            if rec.get("stage") in Stage._value2member_map_ and isinstance(rec.get("at"), int):
                out.append(rec)
        except (ValueError, AttributeError):
            continue
    return out


def record_imported_stages(
    r: redis.Redis, items: Iterable[tuple[Identifier, Stage, int]], source: str
) -> int:
    """Record stages a source (the CRM) set for the persons its identifiers find.

    A stage equal to the person's latest record is not recorded again. Returns how
    many were recorded; identifiers that find nobody (not ingested yet) are skipped.
    A few round trips for the whole import, not a few per row.
    """
    items = list(items)
    owners = multikey.get_many(r, [keyspace.identifier(i.kind.value, i.value) for i, _, _ in items])
    found = sorted({pid for pid in owners if pid})
    with r.pipeline(transaction=False) as pipe:
        for pid in found:
            pipe.hget(keyspace.person(pid), "merged_into")
        merged = pipe.execute()
    live = {pid: follow(r, pid) if into else pid for pid, into in zip(found, merged, strict=True)}
    people = sorted(set(live.values()))
    with r.pipeline(transaction=False) as pipe:
        for pid in people:
            pipe.lrange(keyspace.person(pid, "stages"), -1, -1)
        tails = pipe.execute()
    last = {
        pid: recs[0]["stage"]
        for pid, t in zip(people, tails, strict=True)
        if (recs := parse_records(t))
    }
    records = []
    for (_, stage, at), owner in zip(items, owners, strict=True):
        if not owner:
            continue
        pid = live[owner]
        if last.get(pid) != stage.value:
            last[pid] = stage.value
            records.append((pid, stage.value, at, source))
    return record_stages(r, records, touched=True)
