"""Removing a person from Redis: every key, link and set that names them.

Planned first (:func:`plan_removal`, reads only), then applied (:func:`remove`), so that
erasure (GDPR Art. 17, ``dmp.people.erasure``) can keep the plan and finish a removal
that was cut short. Their rows in Parquet files go at the next compaction: the caller
adds the plan's :meth:`RemovedPerson.pending_members` to ``keyspace.ERASURE_PENDING``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from dmp.people.identity import Identifier, id_keys
from dmp.people.profiles import ARCHIVED_FACETS, FACETS, archived, follow
from dmp.storage import keyspace

# Identifier kinds whose value event rows carry in a column of their own (what compaction
# can find person-less rows by, such as a bot's or a withdrawn cookie's).
ROW_KINDS = ("uid", "anon", "user")


@dataclass(slots=True)
class RemovedPerson:
    """What goes: the person, the ids merged into them, their identifiers and keys."""

    person_id: str
    merged: list[str] = field(default_factory=list)
    identifiers: list[Identifier] = field(default_factory=list)
    segments: list[str] = field(default_factory=list)
    keys_deleted: int = 0  # of ``keys``, those that existed when the removal was planned
    tier: str = ""
    keys: list[str] = field(default_factory=list)

    def pending_members(self) -> list[str]:
        """Return the ``ERASURE_PENDING`` members whose rows compaction must drop."""
        persons = [f"person:{p}" for p in (self.person_id, *self.merged)]
        return persons + [i.text for i in self.identifiers if i.kind.value in ROW_KINDS]

    def to_json(self) -> dict[str, Any]:
        """Return the plan as JSON-ready data (kept while a request applies it)."""
        return {**asdict(self), "identifiers": [i.text for i in self.identifiers]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RemovedPerson:
        """Return the plan :meth:`to_json` gave."""
        return cls(
            **{**data, "identifiers": [Identifier.from_text(t) for t in data["identifiers"]]}
        )


def plan_removal(r: redis.Redis, pid: str) -> RemovedPerson | None:
    """Return what removing a person (``pid`` or the person it was merged into) takes,
    reading only, or None if there is no such person.

    Identifiers of the merged-away ids go too (their tombstones and archives hold the
    identifiers they had).
    """
    pid = follow(r, pid)
    profile = r.hgetall(keyspace.person(pid))
    if not profile or "tier" not in profile or profile.get("merged_into"):
        return None
    merged = sorted(r.smembers(keyspace.person(pid, "merged")))
    texts = set(r.smembers(keyspace.person(pid, "identifiers")))
    for old in merged:
        texts |= r.smembers(keyspace.person(old, archived("identifiers")))
    identifiers = sorted(Identifier.from_text(t) for t in texts)
    segments = sorted(r.smembers(keyspace.person(pid, "segments")))
    keys = [keyspace.person(p, f) for p in (pid, *merged) for f in ("", *FACETS)]
    keys += [keyspace.person(p, archived(f)) for p in merged for f in ("", *ARCHIVED_FACETS)]
    existing = sum(int(r.exists(key)) for key in keys)  # one key each: any slot layout
    return RemovedPerson(pid, merged, identifiers, segments, existing, profile["tier"], keys)


def remove(r: redis.Redis, plan: RemovedPerson) -> None:
    """Delete what ``plan`` names from Redis, and the log entries naming the person.

    Idempotent (a request cut short applies it again), in steps that each keep to one
    Redis Cluster slot: the set writes in ``{dmp}``; each link deleted only while it
    still leads to the person (a script on that one key); the lookup sets; the
    merged-away ids' keys; the live person's keys last (what makes them "not found").
    Not for the ingest worker's hot path: a few round trips. The caller bumps
    ``keyspace.WORKER_EPOCH`` if the worker may have cached them.
    """
    pid, merged = plan.person_id, plan.merged
    with r.pipeline(transaction=True) as pipe:  # {dmp}
        pipe.zrem(keyspace.SEGMENTS_LIVE, pid)
        pipe.sadd(keyspace.MATRIX_TOUCHED, pid)  # the next build drops their row
        pipe.execute()
    del_if = r.register_script(DEL_IF_OWNER)
    for ident in plan.identifiers:
        for key in id_keys(ident):
            # Only links that still lead to this person (an identifier can have moved on).
            del_if(keys=[key], args=[pid, *merged])
    if plan.segments:
        with r.pipeline(transaction=False) as pipe:
            for sid in plan.segments:
                pipe.srem(keyspace.segment(sid, "members"), pid)
            pipe.execute()
    by_person: dict[str, list[str]] = {}
    for key in plan.keys:
        by_person.setdefault(keyspace.person_id_in(key), []).append(key)
    for owner in (*merged, pid):  # the live person last
        if by_person.get(owner):
            r.delete(*by_person[owner])  # one person's keys: one slot
    _forget_in_logs(r, {pid, *merged})


def _forget_in_logs(r: redis.Redis, pids: set[str]) -> None:
    """Delete the merge- and conflict-log entries that name any of ``pids``."""
    for log_key, fields in (
        (keyspace.MERGES, ("from", "into")),
        (keyspace.CONFLICTS, ("person_id", "other_id")),
    ):
        last = "-"
        while True:
            chunk = r.xrange(log_key, min=last, count=10_000)
            if last != "-":
                chunk = chunk[1:]  # the entry the last chunk ended on
            if not chunk:
                break
            naming = [eid for eid, entry in chunk if any(entry.get(f) in pids for f in fields)]
            if naming:
                r.xdel(log_key, *naming)
            last = chunk[-1][0]


# Delete KEYS[1] only if it names one of ARGV (the person or an id merged into them): one
# key, so it runs on its own slot of a Redis Cluster.
DEL_IF_OWNER = """
local owner = redis.call('GET', KEYS[1])
for _, pid in ipairs(ARGV) do
  if owner == pid then return redis.call('DEL', KEYS[1]) end
end
return 0
"""
