"""Returning hits: known persons coming back, written without the identity lock.

With several partitions the workers take turns on identities (``dmp.ingest.identitylock``).
Most hits need no turn: a known browser or user coming back adds a touchpoint and
changes nothing else (no identifier, trait, consent, tier or first sighting). Such a hit
is *returning* if its only identifier's person is cached, stored and live, and no other
hit of the batch that needs the lock names that person (those go together, in order).

A returning hit's write is one script per person on the person's own slot (cluster-safe:
its keys declared), applied only while the person is stored (``tier``), not merged away
and no merge of it has begun (``merges.MERGING``, set before a merge reads anything): a
touchpoint thus never lands on a person merged or erased meanwhile by another worker.
Whatever the script refuses is handled again the slow way, under the lock, from the
persons read anew. Other workers' caches need not hear of these writes: a timeline's
length is all they change, and the script keeps it under the cap itself.
"""

from __future__ import annotations

from typing import Any

import redis

from dmp.people.identity import Identifier, IdKind
from dmp.people.merges import MERGING, UNMERGED
from dmp.people.profiles import PersonState, trusted_id
from dmp.records import Hit, Tier
from dmp.storage import keyspace
from dmp.storage.bulk import Bulk, InFlight

# A read batch's hit to resolve: the hit, its identifiers, its timeline member.
Resolvable = tuple[Hit, list[Identifier], str]

# KEYS: the profile hash, the timeline. ARGV: the cap, the MERGING and UNMERGED fields,
# the UNMERGED value the cache holds, then score and member pairs. Returns 1 if added, 0
# if refused (the person is not there to take them, or not as the cache knew it).
GROW_TIMELINE = """
local held = redis.call('HMGET', KEYS[1], 'tier', ARGV[2], ARGV[3])
if not held[1] or held[1] == 'merged' or held[2] then return 0 end
if (held[3] or '') ~= ARGV[4] then return 0 end
for i = 5, #ARGV, 1000 do
  redis.call('ZADD', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
local cap = tonumber(ARGV[1])
if redis.call('ZCARD', KEYS[2]) > cap then
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -cap - 1)
end
return 1
"""


def split(
    people: list[Resolvable], owners: dict[Identifier, str], states: dict[str, PersonState]
) -> tuple[dict[str, list[Resolvable]], list[Resolvable]]:
    """Return the returning hits by person, and the rest (in batch order) for the lock."""
    candidates: list[tuple[str, Resolvable]] = []
    rest: list[Resolvable] = []
    locked: set[str] = set()  # persons a hit that needs the lock may touch
    for item in people:
        hit, ids, _ = item
        pid = owners.get(ids[0], "") if len(ids) == 1 else ""
        state = states.get(pid) if pid else None
        if state is not None and _returns(hit, ids[0], state):
            candidates.append((pid, item))
            continue
        rest.append(item)
        add_owners(ids, owners, states, locked)
    returning: dict[str, list[Resolvable]] = {}
    for pid, item in candidates:
        if pid in locked:
            rest.append(item)
        else:
            returning.setdefault(pid, []).append(item)
    return returning, rest


def add_owners(
    ids: list[Identifier],
    owners: dict[Identifier, str],
    states: dict[str, PersonState],
    into: set[str],
) -> None:
    """Add to ``into`` the cached owners of ``ids`` and the persons they were merged
    into: every person resolving those identifiers reads."""
    for i in ids:
        owner = owners.get(i)
        while owner and owner not in into:
            into.add(owner)
            held = states.get(owner)
            owner = held.merged_into if held is not None else None


def _returns(hit: Hit, ident: Identifier, state: PersonState) -> bool:
    """Return whether ``hit`` of the person ``state`` only adds a touchpoint (the worker's
    handling would change nothing but the timeline, see ``batch.Ingest._apply``)."""
    return (
        hit.type != "consent"
        and not hit.traits
        and state.exists
        and not state.merged_into
        and not state.merging
        and state.tier is state.stored_tier
        and state.tier is not Tier.UNKNOWN
        and hit.timestamp >= state.first_seen
        and (not hit.consent or _said_before(hit, ident, state))
        and (not hit.trusted or trusted_id(ident) in state.trusted)
    )


def _said_before(hit: Hit, ident: Identifier, state: PersonState) -> bool:
    """Return whether ``hit``'s consent is what its browser said last, as recorded.

    Only for a browser's own cookie: every hit naming that cookie comes to this
    partition, so no other worker can have changed its consent states since. A consent
    the company's systems send speaks for the person's email too, which hits on other
    partitions change: those go the slow way."""
    return ident.kind is IdKind.UID and not hit.trusted and state.last_said == (ident, hit.consent)


class TimelineWrites:
    """One batch's returning hits at a time: sent, then the refused persons read back."""

    def __init__(self, r: redis.Redis, cap: int) -> None:
        self.r, self.cap = r, cap
        self._sha: str | None = None
        self._sent: tuple[dict[str, list[Resolvable]], dict[str, str], InFlight] | None = None

    def send(self, returning: dict[str, list[Resolvable]], states: dict[str, PersonState]) -> None:
        """Send the touchpoints of ``returning`` (persons cached in ``states``), one script
        call per person."""
        if self._sha is None:
            self._sha = self.r.script_load(GROW_TIMELINE)
        known = {pid: states[pid].unmerged for pid in returning}
        self._sent = (returning, known, self._calls(returning, known).send(self.r))

    def _calls(self, returning: dict[str, list[Resolvable]], known: dict[str, str]) -> Bulk:
        bulk = Bulk()
        for pid, items in returning.items():
            args: list[Any] = [self.cap, MERGING, UNMERGED, known[pid]]
            for hit, _, tp in items:
                args += (hit.timestamp, tp)
            keys = (keyspace.person(pid), keyspace.person(pid, "touchpoints"))
            bulk.add("EVALSHA", self._sha or "", 2, *keys, *args)
        return bulk

    def refused(self) -> set[str]:
        """Wait for the writes sent; return the persons that took none (handled again)."""
        if self._sent is None:
            return set()
        (returning, known, inflight), self._sent = self._sent, None
        try:
            replies = inflight.wait()
        except redis.exceptions.NoScriptError:
            # Redis restarted or its scripts were flushed: load it again; the calls are
            # repeatable (a touchpoint added twice is one member).
            self._sha = self.r.script_load(GROW_TIMELINE)
            replies = self._calls(returning, known).execute(self.r)
        return {pid for pid, added in zip(returning, replies, strict=True) if not added}

    def drop(self) -> None:
        """Read and forget the replies of writes sent (their batch is handled again)."""
        if self._sent is not None:
            (_, _, inflight), self._sent = self._sent, None
            try:
                inflight.wait()
            except redis.RedisError:
                pass  # a lost connection is discarded by wait; error replies change nothing
