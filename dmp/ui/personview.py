"""What the person page shows, gathered in one place: the profile, identifiers and
consents from Redis (two round trips), the score, interests and next content from the
person's row of the latest build (one row group of the snapshot), and the segments."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from dmp.config import Config
from dmp.matrix import snapshots
from dmp.matrix.sources import scoring_model
from dmp.people import consents as consent_rules
from dmp.people import lifecycle
from dmp.people.identity import Identifier, IdKind
from dmp.storage import keyspace
from segments.matrix import by_weight
from segments.rules import RuleError

TIMELINE_PAGE = 50
MAX_SHOWN = 1000  # touchpoints one page may ask for (Redis keeps config.timeline_cap)
TRAIT_CHARS = 500  # a trait's shown text is cut here (a trait may be any JSON)
KIND_ORDER = [kind.value for kind in IdKind]


@dataclass(frozen=True, slots=True)
class PersonView:
    """Everything the person page shows of one live person."""

    person_id: str
    tier: str
    email: str
    contact: tuple[str, ...]
    first_seen: int | None
    identifiers: list[tuple[str, list[str]]]  # kind -> values, strongest kind first
    traits: list[tuple[str, str]]
    consents: list[dict[str, Any]]  # the current state per category and identifier
    consent_history: list[dict[str, Any]]  # every change, newest first
    stages: list[dict[str, Any]]  # recorded stages, newest first
    tiers: list[dict[str, Any]]  # tier promotions the timeline holds, newest first
    timeline: list[dict[str, Any]]
    timeline_total: int
    segments: list[tuple[str, str]]  # (id, name)
    row: dict[str, Any] | None  # the person's matrix row (None before a build has them)
    rules: list[dict[str, Any]]  # the score's rules: rule, points, kind (fit/activity)


def person_view(r: redis.Redis, config: Config, pid: str, shown: int) -> PersonView | None:
    """Return the person page's data of live person ``pid`` (None if there is none)."""
    with r.pipeline(transaction=False) as pipe:
        pipe.hgetall(keyspace.person(pid))
        pipe.smembers(keyspace.person(pid, "identifiers"))
        pipe.hgetall(keyspace.person(pid, "traits"))
        pipe.lrange(keyspace.person(pid, consent_rules.LOG_FACET), 0, -1)
        pipe.lrange(keyspace.person(pid, "stages"), 0, -1)
        pipe.smembers(keyspace.person(pid, "segments"))
        pipe.zrevrange(keyspace.person(pid, "touchpoints"), 0, -1)  # timeline_cap at most
        profile, idents, traits, proofs, stages, sids, kept = pipe.execute()
    if profile.get("tier") in (None, "merged"):
        return None
    row = snapshots.snapshot_row(config, pid)
    return PersonView(
        person_id=pid,
        tier=profile["tier"],
        email=profile.get("email", ""),
        contact=tuple(sorted(filter(None, profile.get("contact", "").split(",")))),
        first_seen=int(profile["first_seen"]) if profile.get("first_seen") else None,
        identifiers=_identifiers(idents),
        traits=[(name, _trait_text(value)) for name, value in sorted(traits.items())],
        consents=current_consents(profile, proofs),
        consent_history=consent_rules.history(proofs)[::-1],
        stages=lifecycle.parse_records(stages)[::-1],
        tiers=tier_history(kept),
        timeline=[json.loads(member) for member in kept[:shown]],
        timeline_total=len(kept),
        segments=_segment_names(r, sorted(sids)),
        row=row,
        rules=score_rules(r, row),
    )


def timeline_page(
    r: redis.Redis, pid: str, offset: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """Return ``limit`` touchpoints of a person from ``offset`` on, newest first, and how
    many Redis keeps."""
    key = keyspace.person(pid, "touchpoints")
    with r.pipeline(transaction=False) as pipe:
        pipe.zrevrange(key, offset, offset + limit - 1)
        pipe.zcard(key)
        members, total = pipe.execute()
    return [json.loads(member) for member in members], total


def tier_history(timeline: list[str]) -> list[dict[str, Any]]:
    """Return the tier promotions (when, from, to, source) of a person's kept timeline
    (newest first, as stored): the worker writes each promotion into it."""
    found = (json.loads(m) for m in timeline if '"type":"tier"' in m)
    return [p for p in found if p.get("event") == "tier_promoted"]


def current_consents(profile: dict[str, str], proofs: list[str]) -> list[dict[str, Any]]:
    """Return each category's state per identifier, with the proof that set it."""
    latest = {(p["category"], p["identifier"]): p for p in consent_rules.history(proofs)}
    out = []
    for name, (granted, since) in sorted(consent_rules.parse_held(profile).items()):
        category, ident = consent_rules.split_field(name)
        proof = latest.get((category, ident.text), {})
        out.append({**proof, "category": category, "identifier": ident.text})
        out[-1].update(granted=granted, at=since or proof.get("at"))
    return out


def score_rules(r: redis.Redis, row: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Return the rules that gave the person points, biggest first, each with its kind
    (fit or activity) as the applied scoring model names it ('' if it no longer does)."""
    if row is None:
        return []
    try:
        model = scoring_model(r)
        kinds = {rule.name: "activity" for rule in model.activity}
        kinds |= {rule.name: "fit" for rule in model.fit}
    except RuleError:
        kinds = {}
    return [
        {**part, "kind": kinds.get(part["rule"], "")} for part in by_weight(row["score_breakdown"])
    ]


def _identifiers(idents: set[str]) -> list[tuple[str, list[str]]]:
    grouped: dict[str, list[str]] = {}
    for text in sorted(idents):
        ident = Identifier.from_text(text)
        grouped.setdefault(ident.kind.value, []).append(ident.value)
    return sorted(grouped.items(), key=lambda pair: KIND_ORDER.index(pair[0]))


def _trait_text(value: str) -> str:
    try:
        data = json.loads(value)
    except ValueError:
        data = value
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return text if len(text) <= TRAIT_CHARS else text[:TRAIT_CHARS] + "…"


def _segment_names(r: redis.Redis, sids: list[str]) -> list[tuple[str, str]]:
    if not sids:
        return []
    with r.pipeline(transaction=False) as pipe:
        for sid in sids:
            pipe.hget(keyspace.segment(sid), "name")
        names = pipe.execute()
    return [(sid, name or sid) for sid, name in zip(sids, names, strict=True)]
