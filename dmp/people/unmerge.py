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
from dmp.people.merges import MERGING, UNMERGED, once
from dmp.people.profiles import (
    ARCHIVED_FACETS,
    TRUSTED_FACET,
    archived,
    follow,
    has_address_trait,
    tier_for,
    trusted_id,
)
from dmp.records import Hit, Tier, dump_json
from dmp.storage import keyspace, multikey

log = logging.getLogger(__name__)

UNMERGE = "unmerge"  # the control entry's type


class UnmergeError(ValueError):
    """A merge that cannot be undone; the message says why."""


def apply(r: redis.Redis, hit: Hit) -> dict[str, Any]:
    """Undo the merge of the person a control entry names; return (and store) the report.

    In steps on the persons' own slots (a Redis Cluster has no transaction over both),
    each repeatable, from a plan kept before the first change
    (``keyspace.control_plan``): the source gets its facets back, the identifier links
    lead to it again, the target gives up what the source brought (guarded by the
    source's membership of ``:merged``, removed in the same MULTI), the archive goes,
    and one MULTI counts, logs and stores the report in place of the plan. A request
    delivered again finishes from the plan, or returns the stored report.
    """
    request_id = control.request_id_of(hit)
    done = control.stored_report(r, request_id)
    if done is not None:
        return done
    kept = r.get(keyspace.control_plan(request_id))
    if kept:
        plan = json.loads(kept)
    else:
        target = r.hget(keyspace.person(hit.user_id), "merged_into")
        if target:  # no lock-free write reaches it from before the plan to the end
            r.hset(keyspace.person(target), MERGING, request_id)
        try:
            plan = plan_unmerge(r, hit.user_id)
        except UnmergeError as exc:
            report = {
                "request": request_id,
                "person_id": hit.user_id,
                "found": False,
                "error": str(exc),
            }
            control.store_report(r, request_id, report)
            return report
        r.set(keyspace.control_plan(request_id), dump_json(plan))
    _restore_source(r, plan)
    back = [Identifier.from_text(t) for t in plan["back"]]
    multikey.set_many(r, {key: plan["src"] for ident in back for key in id_keys(ident)})
    _release_target(r, plan)
    src = plan["src"]
    r.delete(*(keyspace.person(src, archived(f)) for f in ("", *ARCHIVED_FACETS)))
    report = {"request": request_id, "found": True, **_result(plan)}
    _finish(r, plan, request_id, report)
    log.info("unmerged person %s from %s (%d identifiers back)", src, plan["target"], len(back))
    return report


def plan_unmerge(r: redis.Redis, src: str) -> dict[str, Any]:
    """Return what giving merged-away person ``src`` back what they brought changes
    (concrete values, JSON-ready), reading only."""
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
    back_fields = {
        name: value
        for name, value in target_states.items()
        if consent_rules.split_field(name)[1].text in back
    }
    own_traits = [n for n in copied if target_traits.get(n) == src_traits.get(n)]
    remaining = held - set(back)
    target_email, target_contact = _contact(remaining, target_traits, own_traits)
    src_email, src_contact = _contact(set(back), src_traits, ())
    return {
        "src": src,
        "target": target,
        "back": back,
        "back_fields": back_fields,
        "own_traits": sorted(own_traits),
        "proofs": proofs,
        "points": points,
        "stages": stages,
        "first_seen": archive.get("first_seen", "0"),
        "src_profile": {
            "tier": tier_for(src_email, src_contact, bool(back)).value,
            "email": src_email,
            "contact": ",".join(sorted(src_contact)),
        },
        "target_profile": {
            "tier": tier_for(target_email, target_contact, bool(remaining)).value,
            "email": target_email,
            "contact": ",".join(sorted(target_contact)),
        },
        "old_target_tier": target_profile.get("tier", Tier.UNKNOWN.value),
        "at": str(int(time.time() * 1000)),
    }


def _restore_source(r: redis.Redis, plan: dict[str, Any]) -> None:
    """In the source's slot, while its tombstone stands: its facets back from the
    archive, only what it brought as identifiers, its profile as it now is."""
    src = plan["src"]

    def write(pipe: Any) -> None:
        for facet in ARCHIVED_FACETS:
            pipe.copy(
                keyspace.person(src, archived(facet)), keyspace.person(src, facet), replace=True
            )
        pipe.delete(keyspace.person(src, "identifiers"))  # only what they brought, not shared
        if plan["back"]:
            pipe.sadd(keyspace.person(src, "identifiers"), *plan["back"])
        pipe.hdel(keyspace.person(src), "merged_into")
        mapping = {**plan["back_fields"], **plan["src_profile"], "first_seen": plan["first_seen"]}
        pipe.hset(keyspace.person(src), mapping=mapping)

    tomb = keyspace.person(src)
    once(r, tomb, lambda pipe: bool(pipe.hget(tomb, "merged_into")), write)


def _release_target(r: redis.Redis, plan: dict[str, Any]) -> None:
    """In the target's slot, once (the source leaves ``:merged`` in the same MULTI):
    the target gives up what the source brought."""
    src, target = plan["src"], plan["target"]
    back_ids = [Identifier.from_text(t) for t in plan["back"]]

    def write(pipe: Any) -> None:
        if back_ids:
            pipe.srem(keyspace.person(target, "identifiers"), *plan["back"])
            pipe.srem(keyspace.person(target, TRUSTED_FACET), *(trusted_id(i) for i in back_ids))
        if plan["back_fields"]:
            pipe.hdel(keyspace.person(target), *plan["back_fields"])
        if plan["own_traits"]:
            pipe.hdel(keyspace.person(target, "traits"), *plan["own_traits"])
        for proof in plan["proofs"]:
            pipe.lrem(keyspace.person(target, consent_rules.LOG_FACET), 1, proof)
        if plan["points"]:
            pipe.zrem(keyspace.person(target, "touchpoints"), *plan["points"])
        for stage in plan["stages"]:
            pipe.lrem(keyspace.person(target, "stages"), 1, stage)
        pipe.srem(keyspace.person(target, "merged"), src)
        pipe.hset(keyspace.person(target), mapping=plan["target_profile"])
        # Caches from before now are stale for it: their lock-free writes are refused.
        pipe.hset(keyspace.person(target), UNMERGED, f"{src}@{plan['at']}")
        pipe.hdel(keyspace.person(target), MERGING)

    marker = keyspace.person(target, "merged")
    once(r, marker, lambda pipe: bool(pipe.sismember(marker, src)), write)


def _finish(r: redis.Redis, plan: dict[str, Any], request_id: str, report: dict) -> None:
    """Count, log and store the report in place of the plan, once ({dmp})."""
    src, target = plan["src"], plan["target"]
    new_target, old_target = plan["target_profile"]["tier"], plan["old_target_tier"]
    kept = keyspace.control_plan(request_id)

    def write(pipe: Any) -> None:
        pipe.hincrby(keyspace.STATS, f"persons:{plan['src_profile']['tier']}", 1)
        if old_target != new_target:
            pipe.hincrby(keyspace.STATS, f"persons:{old_target}", -1)
            pipe.hincrby(keyspace.STATS, f"persons:{new_target}", 1)
        pipe.sadd(keyspace.MATRIX_TOUCHED, src, target)
        entry = {"from": src, "into": target, "reason": "unmerged", "identifier": ""}
        entry |= {"by": "admin", "source": "admin", "at": plan["at"]}
        pipe.xadd(keyspace.MERGES, entry, maxlen=1_000_000, approximate=True)
        pipe.incr(keyspace.WORKER_EPOCH)
        control.queue_report(pipe, request_id, report)
        pipe.delete(kept)

    once(r, kept, lambda pipe: bool(pipe.exists(kept)), write)


def _result(plan: dict[str, Any]) -> dict[str, Any]:
    """Return what an unmerge moved, as its report says."""
    return {
        "person_id": plan["src"],
        "from": plan["target"],
        "identifiers": plan["back"],
        "traits": plan["own_traits"],
        "touchpoints": len(plan["points"]),
        "tiers": {
            plan["src"]: plan["src_profile"]["tier"],
            plan["target"]: plan["target_profile"]["tier"],
        },
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
