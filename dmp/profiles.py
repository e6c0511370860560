"""Person profiles in Redis: state, tier, consents, traits, identifiers and timeline.

Keys (all under the person's hash tag, see ``dmp.keyspace.person``):

- the profile hash: ``tier``, ``first_seen``, ``last_seen`` (ms), ``email``, ``contact``
  (comma set of phone/address/crm), ``n_tp`` (timeline length estimate), ``merged_into``,
  and one ``c:<category>`` field per consent category holding its proof as JSON;
- ``:identifiers`` set of ``kind:value``; ``:traits`` hash of JSON values;
- ``:touchpoints`` sorted set of JSON touchpoints scored by time (capped; Parquet keeps all).

The worker batches reads (:func:`load_states`) and writes (:func:`write_delta`); a merge
(:func:`merge_person`) is rare and runs on its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from dmp import keyspace
from dmp.identity import CONTACT_KINDS, Identifier
from dmp.records import Category, Tier

CONSENT_FIELDS = [f"c:{c.value}" for c in Category]
_STATE_FIELDS = ["tier", "first_seen", "last_seen", "email", "contact", "n_tp", "merged_into"]
_FIELDS = _STATE_FIELDS + CONSENT_FIELDS


def tier_for(email: str, contact: set[str] | frozenset[str], identified: bool) -> Tier:
    """Return the tier a person's known facts give: email plus contact is high, and so on."""
    if email:
        return Tier.HIGH if contact & CONTACT_KINDS else Tier.MEDIUM
    return Tier.LOW if identified else Tier.UNKNOWN


@dataclass(slots=True)
class PersonState:
    """What the worker knows of a person while it handles a batch."""

    person_id: str
    exists: bool = False  # stored in Redis before this batch
    stored_tier: Tier = Tier.UNKNOWN  # the tier Redis holds (counted in the stats)
    tier: Tier = Tier.UNKNOWN
    email: str = ""
    contact: set[str] = field(default_factory=set)
    first_seen: int = 0
    last_seen: int = 0
    n_tp: int = 0
    consents: dict[str, bool] = field(default_factory=dict)
    merged_into: str = ""


@dataclass(slots=True)
class PersonDelta:
    """Writes for one person collected over a batch, applied in one go."""

    first_seen: int = 0
    last_seen: int = 0
    traits: dict[str, str] = field(default_factory=dict)  # name -> JSON value
    consents: dict[str, str] = field(default_factory=dict)  # c:<category> -> proof JSON
    touchpoints: dict[str, int] = field(default_factory=dict)  # JSON member -> ms
    identifiers: set[Identifier] = field(default_factory=set)

    def see(self, ms: int) -> None:
        """Widen the seen interval to include ``ms``."""
        self.first_seen = ms if not self.first_seen else min(self.first_seen, ms)
        self.last_seen = max(self.last_seen, ms)

    def absorb(self, other: PersonDelta) -> None:
        """Take over another person's pending writes (it was merged into this one)."""
        if other.first_seen:
            self.see(other.first_seen)
            self.see(other.last_seen)
        for name, value in other.traits.items():
            self.traits.setdefault(name, value)
        for name, value in other.consents.items():
            self.consents.setdefault(name, value)
        self.touchpoints.update(other.touchpoints)
        self.identifiers |= other.identifiers


def load_states(r: redis.Redis, pids: list[str]) -> dict[str, PersonState]:
    """Return the stored state of each person id (``exists`` False for unknown ids)."""
    with r.pipeline(transaction=False) as pipe:
        for pid in pids:
            pipe.hmget(keyspace.person(pid), _FIELDS)
        rows = pipe.execute()
    return {pid: _state(pid, row) for pid, row in zip(pids, rows, strict=True)}


def _state(pid: str, row: list[str | None]) -> PersonState:
    tier, first, last, email, contact, n_tp, merged_into, *consents = row
    if tier is None and merged_into is None:
        return PersonState(pid)
    stored = Tier(tier) if tier else Tier.UNKNOWN
    granted = {}
    for name, proof in zip(CONSENT_FIELDS, consents, strict=True):
        if proof:
            granted[name[2:]] = bool(json.loads(proof)["granted"])
    return PersonState(
        pid,
        exists=True,
        stored_tier=stored,
        tier=stored,
        email=email or "",
        contact=set(filter(None, (contact or "").split(","))),
        first_seen=int(first or 0),
        last_seen=int(last or 0),
        n_tp=int(n_tp or 0),
        consents=granted,
        merged_into=merged_into or "",
    )


def write_delta(pipe: Any, state: PersonState, delta: PersonDelta, timeline_cap: int) -> None:
    """Queue one person's batched writes on ``pipe``; counts tier changes in the stats."""
    pid = state.person_id
    first = min(filter(None, (state.first_seen, delta.first_seen)), default=0)
    last = max(state.last_seen, delta.last_seen)
    n_tp = state.n_tp + len(delta.touchpoints)
    mapping: dict[str, Any] = {"last_seen": last, "n_tp": min(n_tp, timeline_cap)}
    if first != state.first_seen or not state.exists:
        mapping["first_seen"] = first
    if state.tier != state.stored_tier or not state.exists:
        mapping["tier"] = state.tier.value
        mapping["email"] = state.email
        mapping["contact"] = ",".join(sorted(state.contact))
        if state.exists:
            pipe.hincrby(keyspace.STATS, f"persons:{state.stored_tier.value}", -1)
        pipe.hincrby(keyspace.STATS, f"persons:{state.tier.value}", 1)
    elif delta.identifiers or delta.traits:
        mapping["email"] = state.email
        mapping["contact"] = ",".join(sorted(state.contact))
    mapping.update(delta.consents)
    pipe.hset(keyspace.person(pid), mapping=mapping)
    if delta.identifiers:
        pipe.sadd(keyspace.person(pid, "identifiers"), *(i.text for i in delta.identifiers))
        for ident in delta.identifiers:
            pipe.set(keyspace.identifier(ident.kind.value, ident.value), pid)
    if delta.traits:
        pipe.hset(keyspace.person(pid, "traits"), mapping=delta.traits)
    if delta.touchpoints:
        pipe.zadd(keyspace.person(pid, "touchpoints"), delta.touchpoints)
        if n_tp > timeline_cap:
            pipe.zremrangebyrank(keyspace.person(pid, "touchpoints"), 0, -timeline_cap - 1)


def merge_person(
    r: redis.Redis, source: PersonState, target: str, log_entry: dict[str, str]
) -> None:
    """Move a stored person's identifiers, traits, consents and timeline into ``target``.

    The source keeps only a tombstone (``merged_into``) so old ids still lead somewhere.
    Called before the batch's own writes; the target's first/last seen come with them.
    """
    src = source.person_id
    with r.pipeline(transaction=False) as pipe:
        pipe.smembers(keyspace.person(src, "identifiers"))
        pipe.hgetall(keyspace.person(src, "traits"))
        pipe.hmget(keyspace.person(target), CONSENT_FIELDS)
        pipe.hmget(keyspace.person(src), CONSENT_FIELDS)
        idents, traits, target_consents, src_consents = pipe.execute()
    with r.pipeline(transaction=True) as pipe:
        for text in idents:
            ident = Identifier.from_text(text)
            pipe.set(keyspace.identifier(ident.kind.value, ident.value), target)
        if idents:
            pipe.sadd(keyspace.person(target, "identifiers"), *idents)
        for name, value in traits.items():
            pipe.hsetnx(keyspace.person(target, "traits"), name, value)
        for name, mine, theirs in zip(CONSENT_FIELDS, target_consents, src_consents, strict=True):
            if theirs and (not mine or json.loads(theirs)["at"] > json.loads(mine)["at"]):
                pipe.hset(keyspace.person(target), name, theirs)
        pipe.zunionstore(
            keyspace.person(target, "touchpoints"),
            [keyspace.person(target, "touchpoints"), keyspace.person(src, "touchpoints")],
            aggregate="MAX",
        )
        pipe.delete(*(keyspace.person(src, f) for f in ("identifiers", "traits", "touchpoints")))
        pipe.delete(keyspace.person(src))
        pipe.hset(keyspace.person(src), mapping={"merged_into": target, "tier": "merged"})
        pipe.hincrby(keyspace.STATS, f"persons:{source.stored_tier.value}", -1)
        pipe.xadd(keyspace.MERGES, log_entry, maxlen=1_000_000, approximate=True)
        pipe.execute()


def follow(r: redis.Redis, pid: str) -> str:
    """Return the surviving person id a (possibly merged) person id leads to."""
    for _ in range(32):
        nxt = r.hget(keyspace.person(pid), "merged_into")
        if not nxt:
            return pid
        pid = nxt
    return pid


def find_person(r: redis.Redis, ident: Identifier) -> str | None:
    """Return the person id an identifier belongs to, or None."""
    pid = r.get(keyspace.identifier(ident.kind.value, ident.value))
    return follow(r, pid) if pid else None


def _iso(ms: str | int | None) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(int(ms) / 1000, UTC).isoformat(timespec="milliseconds")


def get_person(r: redis.Redis, pid: str, limit: int = 100) -> dict[str, Any] | None:
    """Return a person as the admin API shows it (touchpoints newest first), or None."""
    pid = follow(r, pid)
    with r.pipeline(transaction=False) as pipe:
        pipe.hgetall(keyspace.person(pid))
        pipe.smembers(keyspace.person(pid, "identifiers"))
        pipe.hgetall(keyspace.person(pid, "traits"))
        pipe.zrevrange(keyspace.person(pid, "touchpoints"), 0, limit - 1)
        pipe.zcard(keyspace.person(pid, "touchpoints"))
        profile, idents, traits, touchpoints, total = pipe.execute()
    if not profile or "tier" not in profile:
        return None
    identifiers: dict[str, list[str]] = {}
    for text in sorted(idents):
        ident = Identifier.from_text(text)
        identifiers.setdefault(ident.kind.value, []).append(ident.value)
    consents = {}
    for name in CONSENT_FIELDS:
        if profile.get(name):
            proof = json.loads(profile[name])
            consents[name[2:]] = {**proof, "at": _iso(proof["at"])}
    timeline = []
    for member in touchpoints:
        point = json.loads(member)
        point["timestamp"] = _iso(point.pop("t"))
        timeline.append(point)
    return {
        "person_id": pid,
        "tier": profile["tier"],
        "identifiers": identifiers,
        "traits": {k: json.loads(v) for k, v in sorted(traits.items())},
        "consents": consents,
        "first_seen": _iso(profile.get("first_seen")),
        "last_seen": _iso(profile.get("last_seen")),
        "touchpoints": timeline,
        "touchpoints_total": total,
    }
