"""Person requests the ingest worker applies: control entries on the ingest stream.

Erasing a person or undoing a merge rewrites persons, and the worker is their only
writer: done beside it, writes it computed a moment before (its pending batch) could
bring back what the request removed, and its caches would still name it. So such a
request travels the ingest stream as a *control entry* (a :class:`~dmp.records.Hit` of
site ``dmp:control``), and the worker applies it in order with the hits around it,
every earlier write applied first, its caches emptied after. The report is stored under
the request id for whoever waits (``dmp.privacy.requests``). Applying is idempotent: a
request delivered again (the worker stopped before acking it) returns its first report.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from dmp.records import Hit, dump_json
from dmp.storage import keyspace

CONTROL_SITE = "dmp:control"  # the site id of control entries on the ingest stream
RESULT_SECONDS = 24 * 3600  # how long a request's report is kept for its caller


def control_hit(kind: str, person_id: str, request_id: str, **props: str) -> Hit:
    """Return the control entry asking the worker to apply ``kind`` to ``person_id``."""
    now = int(time.time() * 1000)
    return Hit(
        event_id=f"{kind}-{request_id}",
        site_id=CONTROL_SITE,
        source="admin",
        type=kind,
        event=kind,
        received_at=now,
        timestamp=now,
        user_id=person_id,
        properties={"request": request_id, **{k: v[:500] for k, v in props.items()}},
    )


def is_control(hit: Hit) -> bool:
    """Return whether a stream entry is a control entry rather than a hit."""
    return hit.site_id == CONTROL_SITE


def request_id_of(hit: Hit) -> str:
    """Return the request id a control entry carries."""
    return str(hit.properties.get("request", ""))


def stored_report(r: redis.Redis, request_id: str) -> dict[str, Any] | None:
    """Return the report of a request already applied, else None."""
    found = r.get(keyspace.control_result(request_id))
    return json.loads(found) if found else None


def store_report(r: redis.Redis, request_id: str, report: dict[str, Any]) -> None:
    """Keep a request's report for its caller (RESULT_SECONDS)."""
    queue_report(r, request_id, report)


def queue_report(r: Any, request_id: str, report: dict[str, Any]) -> None:
    """Keep a request's report, on a client or queued in a pipeline (with the request's
    last changes, in one MULTI)."""
    r.set(keyspace.control_result(request_id), dump_json(report), ex=RESULT_SECONDS)
