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

from dmp import keyspace
from dmp.identity import Identifier
from dmp.profiles import find_person
from dmp.records import Stage


def stage_record(stage: Stage, at_ms: int, source: str, by: str = "") -> str:
    """Return the stored form of one stage record."""
    return json.dumps({"stage": stage.value, "at": at_ms, "source": source, "by": by})


def record_stage(
    r: redis.Redis, pid: str, stage: Stage, *, source: str, by: str = "", at_ms: int = 0
) -> dict[str, Any]:
    """Record that ``pid`` entered ``stage`` (now, unless ``at_ms``); return the record."""
    at = at_ms or int(time.time() * 1000)
    with r.pipeline(transaction=True) as pipe:
        pipe.rpush(keyspace.person(pid, "stages"), stage_record(stage, at, source, by))
        pipe.sadd(keyspace.MATRIX_TOUCHED, pid)  # the next incremental build refolds them
        pipe.execute()
    return {"stage": stage.value, "at": at, "source": source, "by": by}


def record_stages(r: redis.Redis, records: Iterable[tuple[str, str, int, str]]) -> int:
    """Record many ``(person_id, stage, at_ms, source)`` at once; return how many."""
    n = 0
    with r.pipeline(transaction=False) as pipe:
        for pid, stage, at, source in records:
            pipe.rpush(keyspace.person(pid, "stages"), stage_record(Stage(stage), at, source))
            n += 1
        pipe.execute()
    return n


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
    """
    n = 0
    for ident, stage, at in items:
        pid = find_person(r, ident)
        if pid is None:
            continue
        last = parse_records(r.lrange(keyspace.person(pid, "stages"), -1, -1))
        if last and last[0]["stage"] == stage.value:
            continue
        record_stage(r, pid, stage, source=source, at_ms=at)
        n += 1
    return n
