"""Undoing a merge: the merged-away person comes back with what they brought.

A merge (``dmp.people.profiles.merge_persons``) keeps, under the merged-away person's
tombstone, an archive of what they held and which identifiers and traits they gave the
target. Undoing it (a control entry the worker applies, see ``dmp.people.control``):

- the identifiers they brought leave the target and lead to them again, with the
  consent states given for those identifiers (current ones: a withdrawal since counts);
- their traits, stages, consent proofs and touchpoints are theirs again and leave the
  target (a trait the target changed since stays the target's);
- both persons' email, contact data and tier follow from what each holds now;
- the merge log records the unmerge; the next matrix build refolds both.

Events stored after the merge under the target's id stay the target's: the event log
does not say which identifier a hit came by.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis

from dmp.people import consents as consent_rules
from dmp.people import control
from dmp.people.identity import CONTACT_KINDS, Identifier, IdKind, id_keys
from dmp.people.profiles import (
    ARCHIVED_FACETS,
    TRUSTED_FACET,
    archived,
    follow,
    has_address_trait,
    tier_for,
    trusted_id,
)
from dmp.records import Hit, Tier
from dmp.storage import keyspace

log = logging.getLogger(__name__)

UNMERGE = "unmerge"  # the control entry's type


class UnmergeError(ValueError):
    """A merge that cannot be undone; the message says why."""


def apply(r: redis.Redis, hit: Hit) -> dict[str, Any]:
    """Undo the merge of the person a control entry names; return (and store) the report."""
    request_id = control.request_id_of(hit)
    done = control.stored_report(r, request_id)
    if done is not None:
        return done
    try:
        report = {"request": request_id, "found": True, **unmerge(r, hit.user_id)}
    except UnmergeError as exc:
        report = {
            "request": request_id,
            "person_id": hit.user_id,
            "found": False,
            "error": str(exc),
        }
    control.store_report(r, request_id, report)
    return report


def unmerge(r: redis.Redis, src: str) -> dict[str, Any]:
    """Give merged-away person ``src`` back what they brought; return what moved."""
    archive = r.hgetall(keyspace.person(src, archived("")))
    target = r.hget(keyspace.person(src), "merged_into")
    if not archive or not target:
        raise UnmergeError(f"person {src} is not a merged-away person with an archive")
    target = follow(r, target)
    moved = set(json.loads(archive.get("moved", "[]")))
    copied = json.loads(archive.get("copied_traits", "[]"))
    with r.pipeline(transaction=False) as pipe:
        pipe.smembers(keyspace.person(target, "identifiers"))
        pipe.hgetall(keyspace.person(target, "traits"))
        pipe.hgetall(keyspace.person(target))
        pipe.hgetall(keyspace.person(src, archived("traits")))
        pipe.lrange(keyspace.person(src, archived(consent_rules.LOG_FACET)), 0, -1)
        pipe.zrange(keyspace.person(src, archived("touchpoints")), 0, -1)
        pipe.lrange(keyspace.person(src, archived("stages")), 0, -1)
        held, target_traits, target_profile, src_traits, proofs, points, stages = pipe.execute()
    target_states = {k: v for k, v in target_profile.items() if consent_rules.is_state_field(k)}
    back = sorted(moved & held)  # what the target still holds of what they brought
    back_ids = [Identifier.from_text(t) for t in back]
    back_fields = {
        name: value
        for name, value in target_states.items()
        if consent_rules.split_field(name)[1].text in back
    }
    own_traits = [n for n in copied if target_traits.get(n) == src_traits.get(n)]
    remaining = held - set(back)
    target_email, target_contact = _contact(remaining, target_traits, own_traits)
    src_email, src_contact = _contact(set(back), src_traits, ())
    src_tier = tier_for(src_email, src_contact, bool(back))
    target_tier = tier_for(target_email, target_contact, bool(remaining))
    old_target_tier = target_profile.get("tier", Tier.UNKNOWN.value)
    with r.pipeline(transaction=True) as pipe:
        for facet in ARCHIVED_FACETS:
            pipe.copy(
                keyspace.person(src, archived(facet)), keyspace.person(src, facet), replace=True
            )
        pipe.delete(keyspace.person(src, "identifiers"))  # only what they brought, not shared
        if back:
            pipe.srem(keyspace.person(target, "identifiers"), *back)
            pipe.sadd(keyspace.person(src, "identifiers"), *back)
            pipe.mset({key: src for ident in back_ids for key in id_keys(ident)})
            pipe.srem(keyspace.person(target, TRUSTED_FACET), *(trusted_id(i) for i in back_ids))
        if back_fields:
            pipe.hdel(keyspace.person(target), *back_fields)
        if own_traits:
            pipe.hdel(keyspace.person(target, "traits"), *own_traits)
        for proof in proofs:
            pipe.lrem(keyspace.person(target, consent_rules.LOG_FACET), 1, proof)
        if points:
            pipe.zrem(keyspace.person(target, "touchpoints"), *points)
        for stage in stages:
            pipe.lrem(keyspace.person(target, "stages"), 1, stage)
        pipe.srem(keyspace.person(target, "merged"), src)
        pipe.hdel(keyspace.person(src), "merged_into")
        pipe.hset(
            keyspace.person(src),
            mapping={
                **back_fields,
                "tier": src_tier.value,
                "email": src_email,
                "contact": ",".join(sorted(src_contact)),
                "first_seen": archive.get("first_seen", "0"),
            },
        )
        pipe.hset(
            keyspace.person(target),
            mapping={
                "tier": target_tier.value,
                "email": target_email,
                "contact": ",".join(sorted(target_contact)),
            },
        )
        pipe.hincrby(keyspace.STATS, f"persons:{src_tier.value}", 1)
        if old_target_tier != target_tier.value:
            pipe.hincrby(keyspace.STATS, f"persons:{old_target_tier}", -1)
            pipe.hincrby(keyspace.STATS, f"persons:{target_tier.value}", 1)
        pipe.delete(*(keyspace.person(src, archived(f)) for f in ("", *ARCHIVED_FACETS)))
        pipe.sadd(keyspace.MATRIX_TOUCHED, src, target)
        pipe.xadd(
            keyspace.MERGES,
            {
                "from": src,
                "into": target,
                "reason": "unmerged",
                "identifier": "",
                "by": "admin",
                "source": "admin",
                "at": str(int(time.time() * 1000)),
            },
            maxlen=1_000_000,
            approximate=True,
        )
        pipe.incr(keyspace.WORKER_EPOCH)
        pipe.execute()
    log.info("unmerged person %s from %s (%d identifiers back)", src, target, len(back))
    return {
        "person_id": src,
        "from": target,
        "identifiers": back,
        "traits": sorted(own_traits),
        "touchpoints": len(points),
        "tiers": {src: src_tier.value, target: target_tier.value},
    }


def _contact(
    held: set[str], traits: dict[str, str], leaving: list[str] | tuple[str, ...]
) -> tuple[str, set[str]]:
    """Return the email and contact kinds a person's identifiers and traits give."""
    idents = [Identifier.from_text(t) for t in held]
    email = next((i.value for i in idents if i.kind is IdKind.EMAIL), "")
    contact = {k.value for k in (IdKind.PHONE, IdKind.CRM) if any(i.kind is k for i in idents)}
    kept = {n: v for n, v in traits.items() if n not in leaving}
    if has_address_trait(kept):
        contact.add("address")
    return email, contact & CONTACT_KINDS
