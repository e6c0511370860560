"""Erasure (GDPR Art. 17) as the ingest worker applies it, and the erasure log.

An erasure request travels the ingest stream as a control entry (``dmp.privacy.forget``
puts it there), so that the worker, the only writer of persons, applies it in order
with the hits around it: writes it computed before cannot bring the person back, and
its caches forget them at once. Applying it

- removes the person from Redis (``dmp.people.removal``) and drops their rows from the
  worker's event buffer;
- marks each identifier as erased under a salted hash (``keyspace.erased``): later hits
  carrying one count only in aggregate, and imports report and skip them unless told
  otherwise; the marks never hold an identifier itself;
- appends to ``keyspace.ERASURE_LOG`` what was removed where (counts and salted hashes
  only), which the exporters read to remove the person from every destination;
- adds the person's rows to ``keyspace.ERASURE_PENDING``, which the next compaction
  drops from every Parquet file;
- stores a report under the request id for the caller waiting on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections import Counter
from typing import Any

import redis

from dmp.people.identity import Identifier
from dmp.people.removal import remove_person
from dmp.records import Hit, dump_json
from dmp.storage import keyspace

log = logging.getLogger(__name__)

CONTROL_SITE = "dmp:control"  # the site id of control entries on the ingest stream
ERASE = "erase"
RESULT_SECONDS = 24 * 3600  # how long a request's report is kept for its caller


def salt(r: redis.Redis, create: bool = False) -> bytes | None:
    """Return the installation's erasure salt (made on first use when ``create``)."""
    if create:
        r.set(keyspace.ERASURE_SALT, secrets.token_hex(16), nx=True)
    value = r.get(keyspace.ERASURE_SALT)
    if value is None:
        return None
    return value if isinstance(value, bytes) else value.encode()


def digest(salt_value: bytes, ident: Identifier) -> str:
    """Return the salted hash under which an erased identifier is remembered."""
    return hashlib.sha256(salt_value + ident.text.encode()).hexdigest()


def mark_key(salt_value: bytes, ident: Identifier) -> str:
    """Return the key that exists while ``ident`` counts as erased."""
    return keyspace.erased(digest(salt_value, ident))


def erased_before(r: redis.Redis, idents: list[Identifier]) -> list[bool]:
    """Return, for each identifier, whether it was erased before (one round trip)."""
    salt_value = salt(r)
    if salt_value is None or not idents:
        return [False] * len(idents)
    return [bool(v) for v in r.mget([mark_key(salt_value, i) for i in idents])]


def forgive(r: redis.Redis, idents: list[Identifier]) -> int:
    """Lift the erased mark of identifiers (an import told to take them again)."""
    salt_value = salt(r)
    if salt_value is None or not idents:
        return 0
    return int(r.delete(*(mark_key(salt_value, i) for i in idents)))


def control_hit(person_id: str, request_id: str, by: str, reason: str) -> Hit:
    """Return the control entry asking the worker to erase ``person_id``."""
    now = int(time.time() * 1000)
    return Hit(
        event_id=f"erase-{request_id}",
        site_id=CONTROL_SITE,
        source="admin",
        type=ERASE,
        event=ERASE,
        received_at=now,
        timestamp=now,
        user_id=person_id,
        properties={"request": request_id, "by": by[:200], "reason": reason[:500]},
    )


def is_control(hit: Hit) -> bool:
    """Return whether a stream entry is a control entry rather than a hit."""
    return hit.site_id == CONTROL_SITE


def apply(r: redis.Redis, hit: Hit) -> dict[str, Any]:
    """Erase the person a control entry names; return (and store) the report.

    Idempotent: a request applied again (the worker stopped before acking it) finds
    nobody and reports the first application's result.
    """
    request_id = str(hit.properties.get("request", ""))
    done = r.get(keyspace.erasure_result(request_id))
    if done:
        return json.loads(done)
    removed = remove_person(r, hit.user_id)
    at = int(time.time() * 1000)
    if removed is None:
        report: dict[str, Any] = {
            "request": request_id,
            "person_id": hit.user_id,
            "found": False,
            "at": at,
        }
    else:
        salt_value = salt(r, create=True)
        assert salt_value is not None
        hashes = [digest(salt_value, i) for i in removed.identifiers]
        kinds = Counter(i.kind.value for i in removed.identifiers)
        report = {
            "request": request_id,
            "person_id": removed.person_id,
            "found": True,
            "at": at,
            "merged_ids": len(removed.merged),
            "identifiers": dict(sorted(kinds.items())),
            "segments": removed.segments,
            "redis_keys_deleted": removed.keys_deleted,
            "files": "rows leave every Parquet file at the next compaction (dmp compact)",
        }
        with r.pipeline(transaction=True) as pipe:
            for h in hashes:
                pipe.set(keyspace.erased(h), at)
            pipe.sadd(keyspace.ERASURE_PENDING, *removed.pending_members())
            pipe.xadd(
                keyspace.ERASURE_LOG,
                {
                    "request": request_id,
                    "at": at,
                    "by": str(hit.properties.get("by", "")),
                    "reason": str(hit.properties.get("reason", "")),
                    "identifiers": dump_json(hashes),
                    "segments": dump_json(removed.segments),
                    "tier": removed.tier,
                },
            )
            pipe.incr(keyspace.WORKER_EPOCH)
            pipe.execute()
        log.info(
            "erased person %s (%d identifiers, %d merged ids, %d segments)",
            removed.person_id,
            len(removed.identifiers),
            len(removed.merged),
            len(removed.segments),
        )
    r.set(keyspace.erasure_result(request_id), dump_json(report), ex=RESULT_SECONDS)
    return {**report, "erased_ids": [] if removed is None else [removed.person_id, *removed.merged]}
