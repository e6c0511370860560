"""Person profiles in Redis: state, tier, consents, traits, identifiers and timeline.

Keys (all under the person's hash tag, see ``dmp.storage.keyspace.person``):

- the profile hash: ``tier``, ``first_seen`` (ms), ``email``, ``contact`` (comma set of
  phone/address/crm), ``merged_into``;
- ``c|<category>|<identifier>`` fields and ``:consentlog``: consent per identifier with
  its proofs (see ``dmp.people.consents``);
- ``:identifiers`` set of ``kind:value``; ``:traits`` hash of JSON values;
- ``:trusted`` set of ``id:<kind>:<value>`` and ``trait:<name>``: what the company's own
  systems said (a browser's claim never changes it, see ``dmp.people.claims``);
- ``:stages`` list of recorded lifecycle stages (see ``dmp.people.lifecycle``);
- ``:segments`` set of the segment ids the person is in (kept by ``dmp.membership.runs``);
- ``:touchpoints`` sorted set of JSON touchpoints scored by time (capped; Parquet keeps all);
  its highest score is the person's ``last_seen``.

A returning visitor costs one ZADD per batch: nothing in the hash changes.

The worker batches reads (:func:`load_states`) and writes (:func:`write_delta`); a merge
(``dmp.people.merges.merge_persons``, kept here under its old name) is rare and runs on
its own.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from dmp.people import consents as consent_rules
from dmp.people.identity import CONTACT_KINDS, Identifier, has_address, id_keys
from dmp.people.merges import ARCHIVED_FACETS as ARCHIVED_FACETS
from dmp.people.merges import MERGING, UNMERGED
from dmp.people.merges import TRUSTED_FACET as TRUSTED_FACET
from dmp.people.merges import archived as archived
from dmp.people.merges import merge_persons as merge_persons
from dmp.records import Tier
from dmp.storage import keyspace
from dmp.storage.bulk import Bulk

log = logging.getLogger(__name__)
# The profile hash's fields, in the order every reader unpacks them.
PROFILE_FIELDS = ("tier", "first_seen", "email", "contact", "merged_into")
# Every facet a person's keys have besides the profile hash (a merge or an erasure
# moves or deletes them all).
FACETS = (
    "identifiers",
    "traits",
    "touchpoints",
    "stages",
    "merged",
    "segments",
    consent_rules.LOG_FACET,
    TRUSTED_FACET,
)


def has_address_trait(traits: Mapping[str, str]) -> bool:
    """Return whether stored traits (JSON values) hold a postal address."""
    value = traits.get("address")
    return bool(value) and has_address({"address": json.loads(value)})


def trusted_id(ident: Identifier) -> str:
    """Return the ``:trusted`` member saying a trusted source gave ``ident``."""
    return f"id:{ident.text}"


def trusted_trait(name: str) -> str:
    """Return the ``:trusted`` member saying a trusted source set trait ``name``."""
    return f"trait:{name}"


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
    n_tp: int = 0
    # State field (see consents.state_field) -> (granted, since ms): the time orders
    # changes (consents.applies), so that an older hit handled later changes nothing.
    consents: dict[str, consent_rules.Held] = field(default_factory=dict)
    merged_into: str = ""
    merging: bool = False  # a merge of it has begun (merges.MERGING): no lock-free writes
    unmerged: str = ""  # the last unmerge that took identifiers from it (merges.UNMERGED)
    # See trusted_id and trusted_trait. Frozen and shared while empty (most persons):
    # the worker makes hundreds of thousands of states; a write rebinds it (|=).
    trusted: frozenset[str] = frozenset()
    # The browser id and consent its last hit brought (all recorded): the worker skips
    # a returning browser's consent that did not change.
    last_said: tuple[Any, Any] | None = None

    @property
    def holds_trusted(self) -> bool:
        """Return whether the company's own systems gave this person an identifier."""
        return bool(self.trusted) and any(m.startswith("id:") for m in self.trusted)


@dataclass(slots=True)
class PersonDelta:
    """Writes for one person collected over a batch, applied in one go."""

    first_seen: int = 0
    traits: dict[str, str] = field(default_factory=dict)  # name -> JSON value
    consents: dict[str, str] = field(default_factory=dict)  # state field -> "1:<ms>"
    proofs: tuple[str, ...] = ()  # JSON proofs, in order (+= rebinds: no list per delta)
    touchpoints: dict[str, int] = field(default_factory=dict)  # JSON member -> ms
    identifiers: set[Identifier] = field(default_factory=set)
    trusted: frozenset[str] = frozenset()

    def see(self, ms: int) -> None:
        """Note a touchpoint at ``ms`` (the earliest one may move first_seen back)."""
        self.first_seen = ms if not self.first_seen else min(self.first_seen, ms)

    def absorb(self, other: PersonDelta) -> None:
        """Take over another person's pending writes (it was merged into this one)."""
        if other.first_seen:
            self.see(other.first_seen)
        for name, value in other.traits.items():
            self.traits.setdefault(name, value)
        for name, value in other.consents.items():  # the newer state of each wins
            mine = self.consents.get(name)
            if (
                mine is None
                or consent_rules.parse_value(value)[1] > consent_rules.parse_value(mine)[1]
            ):
                self.consents[name] = value
        self.proofs += other.proofs
        self.touchpoints.update(other.touchpoints)
        self.identifiers |= other.identifiers
        self.trusted |= other.trusted


def load_states(r: redis.Redis, pids: list[str]) -> dict[str, PersonState]:
    """Return the stored state of each person id (``exists`` False for unknown ids)."""
    bulk = Bulk()
    for pid in pids:
        bulk.add("HGETALL", keyspace.person(pid))
        bulk.add("ZCARD", keyspace.person(pid, "touchpoints"))
        bulk.add("SMEMBERS", keyspace.person(pid, TRUSTED_FACET))
    replies = bulk.execute(r)
    return {pid: _state(pid, *replies[3 * i : 3 * i + 3]) for i, pid in enumerate(pids)}


def _state(pid: str, raw: Any, n_tp: int, trusted: Any) -> PersonState:
    # HGETALL through Bulk: a mapping of bytes (a flat list of them over RESP2).
    pairs = zip(raw[::2], raw[1::2], strict=True) if isinstance(raw, list) else raw.items()
    profile = {
        k.decode() if isinstance(k, bytes) else k: v.decode() if isinstance(v, bytes) else v
        for k, v in pairs
    }
    tier, first, email, contact, merged_into = (profile.get(f) for f in PROFILE_FIELDS)
    if tier is None and merged_into is None:
        return PersonState(pid)
    stored = Tier(tier) if tier and tier != "merged" else Tier.UNKNOWN
    return PersonState(
        pid,
        exists=True,
        stored_tier=stored,
        tier=stored,
        email=email or "",
        contact=set(filter(None, (contact or "").split(","))),
        first_seen=int(first or 0),
        n_tp=n_tp,
        consents=consent_rules.parse_held(profile),
        merged_into=merged_into or "",
        merging=MERGING in profile,
        unmerged=profile.get(UNMERGED) or "",
        trusted=frozenset(m.decode() if isinstance(m, bytes) else m for m in trusted or ()),
    )


@dataclass(slots=True)
class BatchWrites:
    """Writes shared by all persons of a batch, sent as few commands as possible."""

    identifiers: dict[str, str] = field(default_factory=dict)  # identifier key -> pid (MSET)
    stats: Counter[str] = field(default_factory=Counter)  # STATS field -> increment

    def queue(self, bulk: Bulk) -> None:
        """Queue the shared writes."""
        if self.identifiers:
            bulk.add("MSET", *(part for pair in self.identifiers.items() for part in pair))
        for name, amount in self.stats.items():
            if amount:
                bulk.add("HINCRBY", keyspace.STATS, name, amount)


def write_delta(
    bulk: Bulk, shared: BatchWrites, state: PersonState, delta: PersonDelta, timeline_cap: int
) -> None:
    """Queue one person's batched writes (and its share of ``shared``)."""
    pid = state.person_id
    n_tp = state.n_tp + len(delta.touchpoints)
    if (
        state.exists
        and state.tier is state.stored_tier
        and not (delta.identifiers or delta.traits or delta.consents or delta.trusted)
        and state.first_seen <= delta.first_seen
    ):  # a returning visitor: only the timeline grows
        _queue_timeline(bulk, pid, delta, n_tp, timeline_cap)
        state.n_tp = min(n_tp, timeline_cap)
        return
    key = keyspace.person(pid)
    first = min(filter(None, (state.first_seen, delta.first_seen)), default=0)
    fields: list[str | int] = []
    if first != state.first_seen or not state.exists:
        fields += ["first_seen", first]
    tier_changed = state.tier != state.stored_tier or not state.exists
    if tier_changed:
        fields += ["tier", state.tier.value]
        if state.exists:
            shared.stats[f"persons:{state.stored_tier.value}"] -= 1
        shared.stats[f"persons:{state.tier.value}"] += 1
    if tier_changed or delta.identifiers or delta.traits:
        fields += ["email", state.email, "contact", ",".join(sorted(state.contact))]
    if delta.consents:
        fields += [part for pair in delta.consents.items() for part in pair]
        bulk.add("RPUSH", keyspace.person(pid, consent_rules.LOG_FACET), *delta.proofs)
    if fields:
        bulk.add("HSET", key, *fields)
    if delta.trusted:
        bulk.add("SADD", keyspace.person(pid, TRUSTED_FACET), *delta.trusted)
    if delta.identifiers:
        bulk.add("SADD", keyspace.person(pid, "identifiers"), *(i.text for i in delta.identifiers))
        for ident in delta.identifiers:
            for key in id_keys(ident):
                shared.identifiers[key] = pid
    if delta.traits:
        pairs = (part for pair in delta.traits.items() for part in pair)
        bulk.add("HSET", keyspace.person(pid, "traits"), *pairs)
    _queue_timeline(bulk, pid, delta, n_tp, timeline_cap)
    # The state now says what Redis will hold (the worker keeps it cached).
    state.exists, state.stored_tier = True, state.tier
    state.first_seen, state.n_tp = first, min(n_tp, timeline_cap)


def _queue_timeline(bulk: Bulk, pid: str, delta: PersonDelta, n_tp: int, cap: int) -> None:
    if delta.touchpoints:
        timeline = keyspace.person(pid, "touchpoints")
        bulk.add("ZADD", timeline, *(x for m, t in delta.touchpoints.items() for x in (t, m)))
        if n_tp > cap:
            bulk.add("ZREMRANGEBYRANK", timeline, 0, -cap - 1)


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
    return consent_rules.iso(int(ms)) if ms else None


def get_person(r: redis.Redis, pid: str, limit: int = 100) -> dict[str, Any] | None:
    """Return a person as the admin API shows it (touchpoints newest first), or None."""
    pid = follow(r, pid)
    with r.pipeline(transaction=False) as pipe:
        pipe.hgetall(keyspace.person(pid))
        pipe.smembers(keyspace.person(pid, "identifiers"))
        pipe.hgetall(keyspace.person(pid, "traits"))
        pipe.zrevrange(keyspace.person(pid, "touchpoints"), 0, limit - 1, withscores=True)
        pipe.zcard(keyspace.person(pid, "touchpoints"))
        pipe.lrange(keyspace.person(pid, consent_rules.LOG_FACET), 0, -1)
        profile, idents, traits, touchpoints, total, proofs = pipe.execute()
    if not profile or "tier" not in profile:
        return None
    identifiers: dict[str, list[str]] = {}
    for text in sorted(idents):
        ident = Identifier.from_text(text)
        identifiers.setdefault(ident.kind.value, []).append(ident.value)
    consents = consent_rules.consent_view(proofs, consent_rules.parse_states(profile))["current"]
    timeline = []
    for member, _ in touchpoints:
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
        "last_seen": _iso(int(touchpoints[0][1])) if touchpoints else None,
        "touchpoints": timeline,
        "touchpoints_total": total,
    }
