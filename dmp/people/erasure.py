"""Erasure (GDPR Art. 17) as the ingest worker applies it, and the erasure log.

An erasure request reaches the worker as a control entry (``dmp.people.control``), so
that nothing the worker computed before can bring the person back. Applying it

- removes the person from Redis (``dmp.people.removal``) and drops their rows from the
  worker's event buffer;
- marks each identifier as erased under a salted hash (``keyspace.erased``): later hits
  carrying one count only in aggregate, and imports report and skip them unless told
  otherwise; the marks never hold an identifier itself;
- appends to ``keyspace.ERASURE_LOG`` what was removed where (counts and salted hashes
  only): what exporters will read to remove the person from every destination;
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

from dmp.people import control
from dmp.people.identity import Identifier
from dmp.people.removal import RemovedPerson, plan_removal, remove
from dmp.records import Hit, dump_json
from dmp.storage import keyspace, multikey

log = logging.getLogger(__name__)

ERASE = "erase"  # the control entry's type


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
    """Return, for each identifier, whether it was erased before (one round trip per
    node)."""
    salt_value = salt(r)
    if salt_value is None or not idents:
        return [False] * len(idents)
    return [bool(v) for v in multikey.get_many(r, [mark_key(salt_value, i) for i in idents])]


def forgive(r: redis.Redis, idents: list[Identifier]) -> int:
    """Lift the erased mark of identifiers (an import told to take them again)."""
    salt_value = salt(r)
    if salt_value is None or not idents:
        return 0
    return int(r.delete(*(mark_key(salt_value, i) for i in idents)))


def apply(r: redis.Redis, hit: Hit) -> dict[str, Any]:
    """Erase the person a control entry names; return (and store) the report.

    Idempotent, in steps that each may be repeated: the plan is kept before anything
    changes (``keyspace.control_plan``); the identifiers are marked erased and the rows
    queued for compaction; the person is removed; and one MULTI counts the person gone,
    logs the erasure and stores the report in place of the plan. A request delivered
    again (the worker stopped before acking it) finishes from the plan, or returns the
    stored report.
    """
    request_id = control.request_id_of(hit)
    done = control.stored_report(r, request_id)
    if done is not None:
        return done
    kept = r.get(keyspace.control_plan(request_id))
    if kept:
        plan = json.loads(kept)
        removed, at = RemovedPerson.from_json(plan["removal"]), plan["at"]
    else:
        found, at = plan_removal(r, hit.user_id), int(time.time() * 1000)
        if found is None:
            report = {"request": request_id, "person_id": hit.user_id, "found": False, "at": at}
            control.store_report(r, request_id, report)
            return {**report, "erased_ids": []}
        removed = found
        r.set(
            keyspace.control_plan(request_id), dump_json({"removal": removed.to_json(), "at": at})
        )
    salt_value = salt(r, create=True)
    assert salt_value is not None
    hashes = [digest(salt_value, i) for i in removed.identifiers]
    # Marked first: from here on a hit with one of them counts only in aggregate, and
    # compaction drops the rows, whatever happens to the rest of the steps.
    with r.pipeline(transaction=False) as pipe:
        for h in hashes:
            pipe.set(keyspace.erased(h), at)
        pipe.sadd(keyspace.ERASURE_PENDING, *removed.pending_members())
        pipe.execute()
    remove(r, removed)
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
    with r.pipeline(transaction=True) as pipe:  # what must happen once: with the report
        pipe.hincrby(keyspace.STATS, f"persons:{removed.tier}", -1)
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
        control.queue_report(pipe, request_id, report)
        pipe.delete(keyspace.control_plan(request_id))
        pipe.execute()
    log.info(
        "erased person %s (%d identifiers, %d merged ids, %d segments)",
        removed.person_id,
        len(removed.identifiers),
        len(removed.merged),
        len(removed.segments),
    )
    return {**report, "erased_ids": [removed.person_id, *removed.merged]}
