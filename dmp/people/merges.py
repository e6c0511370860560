"""Person merges as a journal of per-slot steps (works on one Redis and on a Cluster).

A merge moves a stored person's identifiers, traits, consents, stages and timeline into
its target. The keys of the two persons, their identifier links and the global counters
live on different Redis Cluster slots, so no one transaction can hold them. Instead each
source is first marked (``merging`` in its profile hash: from then on the writes made
without the identity lock, ``dmp.ingest.returning``, leave it alone), the batch's merges
are planned from what Redis holds (concrete values), the plan is kept in a ``{dmp}``
intent key, and then, per merge in order:

a. the source's archive (its own slot): what it held, so the merge can be undone;
b. the target's additions (its slot), in one MULTI with the marker ``src ∈ :merged``,
   so that the RPUSHes of proofs and stages happen once;
c. the identifier links, re-pointed key by key to the target;
d. the source's tombstone (``merged_into``), its facets deleted.

Last, one ``{dmp}`` MULTI counts the sources gone, logs each merge and drops the intent:
exactly once. The order keeps an identifier from ever leading to a person lacking its
data (until c, links lead to the untouched source; after c, to a target that holds all).
A batch cut short is finished from its intent by :func:`recover_merges` (the worker's
start). Every step may run again: a is repeatable, b is guarded, c and d set values.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from typing import Any, Protocol

import redis

from dmp.people import consents as consent_rules
from dmp.people.identity import Identifier, id_keys
from dmp.records import Tier, dump_json
from dmp.storage import keyspace, multikey

log = logging.getLogger(__name__)


class MergedPerson(Protocol):
    """What a merge reads of the person merged away (``profiles.PersonState`` has it)."""

    person_id: str
    stored_tier: Tier


TRUSTED_FACET = "trusted"
# The profile hash field that marks a person whose merge has begun (its value: the
# merge batch's name). A mark left by a crash before the batch's intent was kept only
# sends the person's returning hits the slow way (under the identity lock).
MERGING = "merging"
# The profile hash field an unmerge sets on the person it took identifiers from (its
# value names that unmerge): a worker's lock-free write made from a cache older than it
# is refused (``dmp.ingest.returning``).
UNMERGED = "unmerged"
# What a merged-away person's tombstone keeps of it, so that the merge can be undone
# (``dmp.people.unmerge``): its facets as they were, under ``archived:<facet>``.
ARCHIVED_FACETS = (
    "identifiers",
    "traits",
    "touchpoints",
    "stages",
    consent_rules.LOG_FACET,
    TRUSTED_FACET,
)
# What a merged-away person loses when its tombstone is written (its lookup sets stay
# for the next segment run to settle).
_SOURCE_FACETS = ("", "identifiers", "traits", "touchpoints", "stages", "merged")
_SOURCE_FACETS += (consent_rules.LOG_FACET, TRUSTED_FACET)
Plan = dict[str, Any]  # one merge's concrete values (JSON), see _plan


def archived(facet: str) -> str:
    """Return the facet name under which a merged-away person keeps ``facet`` ('' is its
    profile hash)."""
    return f"archived:{facet or 'profile'}"


def merge_persons(r: redis.Redis, merges: list[tuple[MergedPerson, str, dict[str, str]]]) -> None:
    """Move stored persons' identifiers, traits, consents and timelines into their targets.

    Each merge is ``(source state, target pid, merge-log entry)``, applied in order: a
    target may itself be merged later in the list, and takes what it received along. A
    source keeps a tombstone (``merged_into``) so that old ids still lead somewhere, and
    an archive of what it held and what it gave the target, so that the merge can be
    undone. A few round trips per merge (merges are rare per batch).
    """
    if not merges:
        return
    name = secrets.token_hex(8)
    with r.pipeline(transaction=False) as pipe:  # marked before anything is read
        for source, _, _ in merges:
            pipe.hset(keyspace.person(source.person_id), MERGING, name)
        pipe.execute()
    plans = _plan(r, merges)
    with r.pipeline(transaction=True) as pipe:  # {dmp}: the journal before any change
        pipe.set(keyspace.merge_intent(name), dump_json(plans))
        pipe.sadd(keyspace.MERGE_INTENTS, name)
        pipe.execute()
    _apply(r, name, plans)


def recover_merges(r: redis.Redis) -> int:
    """Finish every batch of merges a crash cut short (from its intent); return how many."""
    done = 0
    for name in sorted(r.smembers(keyspace.MERGE_INTENTS)):
        kept = r.get(keyspace.merge_intent(name))
        if kept is None:  # finished meanwhile
            r.srem(keyspace.MERGE_INTENTS, name)
            continue
        _apply(r, name, json.loads(kept))
        done += 1
    if done:
        log.info("finished %d batches of merges cut short", done)
    return done


def _apply(r: redis.Redis, name: str, plans: list[Plan]) -> None:
    for plan in plans:
        _archive_source(r, plan)
        _add_to_target(r, plan)
        multikey.set_many(r, dict.fromkeys(plan["links"], plan["target"]))
        _tombstone(r, plan)
    _finish(r, name, plans)


def _plan(r: redis.Redis, merges: list[tuple[MergedPerson, str, dict[str, str]]]) -> list[Plan]:
    """Return each merge's concrete writes, computed from what Redis holds and from what
    the merges before it in the list moved (a target merged later takes it along)."""
    people = list(dict.fromkeys(p for src, target, _ in merges for p in (src.person_id, target)))
    with r.pipeline(transaction=False) as pipe:  # reads only: any slot layout
        for pid in people:
            pipe.smembers(keyspace.person(pid, "identifiers"))
            pipe.hgetall(keyspace.person(pid, "traits"))
            pipe.lrange(keyspace.person(pid, "stages"), 0, -1)
            pipe.lrange(keyspace.person(pid, consent_rules.LOG_FACET), 0, -1)
            pipe.hgetall(keyspace.person(pid))
            pipe.zrange(keyspace.person(pid, "touchpoints"), 0, -1, withscores=True)
            pipe.smembers(keyspace.person(pid, TRUSTED_FACET))
            pipe.smembers(keyspace.person(pid, "merged"))
        found = pipe.execute()
    n = 8
    ids = {pid: set(found[n * i]) for i, pid in enumerate(people)}
    traits = {pid: found[n * i + 1] for i, pid in enumerate(people)}
    stages = {pid: list(found[n * i + 2]) for i, pid in enumerate(people)}
    proofs = {pid: list(found[n * i + 3]) for i, pid in enumerate(people)}
    profiles = {pid: found[n * i + 4] for i, pid in enumerate(people)}
    points = {pid: dict(found[n * i + 5]) for i, pid in enumerate(people)}
    trusted = {pid: set(found[n * i + 6]) for i, pid in enumerate(people)}
    merged = {pid: set(found[n * i + 7]) for i, pid in enumerate(people)}
    consents = {
        pid: {k: v for k, v in profile.items() if consent_rules.is_state_field(k)}
        for pid, profile in profiles.items()
    }
    plans = []
    for source, target, entry in merges:
        src = source.person_id
        moved = ids[src] - ids[target]
        ids[target] |= moved
        copied = {name: v for name, v in traits[src].items() if name not in traits[target]}
        traits[target].update(copied)
        newer = {}
        for name, theirs in consents[src].items():  # the newest state wins
            mine = consents[target].get(name)
            if mine is None or (
                consent_rules.parse_value(theirs)[1] > consent_rules.parse_value(mine)[1]
            ):
                consents[target][name] = newer[name] = theirs
        proofs[target] += proofs[src]
        stages[target] += stages[src]  # the records keep their times; the latest counts
        for member, score in points[src].items():  # as ZUNIONSTORE … AGGREGATE MAX
            points[target][member] = max(score, points[target].get(member, score))
        trusted[target] |= trusted[src]
        # Every id merged into the target, however long ago (the merge log is capped):
        # what an access export or an erasure of the target must also cover.
        gained = merged[src] | {src}
        merged[target] |= gained
        plans.append(
            {
                "src": src,
                "target": target,
                "tier": source.stored_tier.value,
                "moved": sorted(moved),
                "links": [k for t in sorted(moved) for k in id_keys(Identifier.from_text(t))],
                "traits": copied,
                "consents": newer,
                "proofs": proofs[src],
                "stages": stages[src],
                "points": [[m, s] for m, s in points[src].items()],
                "trusted": sorted(trusted[src]),
                "merged": sorted(gained),
                "archive": {
                    **{k: v for k, v in profiles[src].items() if k != MERGING},
                    "into": target,
                    "moved": json.dumps(sorted(moved)),
                    "copied_traits": json.dumps(sorted(copied)),
                    "at": entry.get("at", ""),
                },
                "entry": entry,
            }
        )
    return plans


def _archive_source(r: redis.Redis, plan: Plan) -> None:
    """Step a, in the source's slot: keep what it holds under ``archived:*`` (skipped
    once its tombstone is written: its facets are gone by then)."""
    src = plan["src"]
    if r.hget(keyspace.person(src), "merged_into") == plan["target"]:
        return
    with r.pipeline(transaction=True) as pipe:
        for facet in ARCHIVED_FACETS:
            pipe.copy(
                keyspace.person(src, facet), keyspace.person(src, archived(facet)), replace=True
            )
        pipe.delete(keyspace.person(src, archived("")))
        pipe.hset(keyspace.person(src, archived("")), mapping=plan["archive"])
        pipe.execute()


def _add_to_target(r: redis.Redis, plan: Plan) -> None:
    """Step b, in the target's slot: add what the source brings, with the marker that
    says it was added (``src`` in ``:merged``), all in one MULTI."""
    src, target = plan["src"], plan["target"]

    def write(pipe: Any) -> None:
        if plan["moved"]:
            pipe.sadd(keyspace.person(target, "identifiers"), *plan["moved"])
        if plan["traits"]:
            pipe.hset(keyspace.person(target, "traits"), mapping=plan["traits"])
        if plan["consents"]:
            pipe.hset(keyspace.person(target), mapping=plan["consents"])
        if plan["proofs"]:
            pipe.rpush(keyspace.person(target, consent_rules.LOG_FACET), *plan["proofs"])
        if plan["stages"]:
            pipe.rpush(keyspace.person(target, "stages"), *plan["stages"])
        if plan["points"]:
            pipe.zadd(keyspace.person(target, "touchpoints"), dict(plan["points"]), gt=True)
        if plan["trusted"]:
            pipe.sadd(keyspace.person(target, TRUSTED_FACET), *plan["trusted"])
        pipe.sadd(keyspace.person(target, "merged"), *plan["merged"])

    marker = keyspace.person(target, "merged")
    once(r, marker, lambda pipe: not pipe.sismember(marker, src), write)


def _tombstone(r: redis.Redis, plan: Plan) -> None:
    """Step d, in the source's slot: its facets go, its tombstone leads to the target."""
    src = plan["src"]
    with r.pipeline(transaction=True) as pipe:
        pipe.delete(*(keyspace.person(src, f) for f in _SOURCE_FACETS))
        pipe.hset(keyspace.person(src), mapping={"merged_into": plan["target"], "tier": "merged"})
        pipe.execute()


def _finish(r: redis.Redis, name: str, plans: list[Plan]) -> None:
    """Count the sources gone, log the merges and drop the intent, once ({dmp})."""
    intent = keyspace.merge_intent(name)

    def write(pipe: Any) -> None:
        for plan in plans:
            pipe.hincrby(keyspace.STATS, f"persons:{plan['tier']}", -1)
            pipe.xadd(keyspace.MERGES, plan["entry"], maxlen=1_000_000, approximate=True)
        pipe.delete(intent)
        pipe.srem(keyspace.MERGE_INTENTS, name)

    if not once(r, intent, lambda pipe: bool(pipe.exists(intent)), write):
        r.srem(keyspace.MERGE_INTENTS, name)


def once(
    r: redis.Redis, watched: str, due: Callable[[Any], bool], write: Callable[[Any], None]
) -> bool:
    """Run ``write`` in a MULTI if ``due`` says so while ``watched`` is unchanged (one
    slot: ``write``'s keys share ``watched``'s hash tag); return whether it ran."""
    with r.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(watched)
                if not due(pipe):
                    pipe.unwatch()
                    return False
                pipe.multi()
                write(pipe)
                pipe.execute()
                return True
            except redis.WatchError:  # another writer of the same step: look again
                continue
