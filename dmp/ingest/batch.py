"""What happens to one read batch of hits: dedup, identity, profiles, event rows.

The worker (``dmp.ingest.worker``) owns the stream mechanics; an :class:`Ingest` owns the rest.
Each batch costs a fixed handful of Redis round trips whatever its size: one dedup check,
one identifier MGET (only for identifiers it has not cached), one state read for persons
it has not cached, and one write batch that Redis applies while the next batch is decoded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import lru_cache

import redis

from dmp.config import Config
from dmp.ingest.eventlog import EventBuffer, EventLog, event_digest, event_row, utc_day
from dmp.ingest.identitylock import ChangeLog, IdentityLock, IdentityLockLost
from dmp.ingest.returning import Resolvable, TimelineWrites, add_owners, split
from dmp.ingest.useragent import parse_agent
from dmp.people import claims, control, erasure, identity, unmerge
from dmp.people import consents as consent_rules
from dmp.people.identity import Identifier, IdKind, id_keys
from dmp.people.profiles import (
    BatchWrites,
    PersonDelta,
    PersonState,
    load_states,
    merge_persons,
    tier_for,
    trusted_id,
    trusted_trait,
    write_delta,
)
from dmp.people.timeline import touchpoint
from dmp.records import EVENT_SCHEMA, Hit, Source, Tier, dump_json
from dmp.storage import keyspace, metrics, recenthits
from dmp.storage.bulk import Bulk, InFlight
from dmp.storage.multikey import is_cluster

log = logging.getLogger(__name__)


@lru_cache(maxsize=64)
def set_aside(collector: str, reason: str) -> tuple[str, str]:
    """Return the fields that count a hit the worker set aside (a bot, or no analytics
    consent): its ``dmp_hits_set_aside_total`` counter and its last-hour field."""
    total = metrics.counter("dmp_hits_set_aside_total", collector=collector, reason=reason)
    return total, recenthits.recent_field(collector, reason)


_PERSON_COLUMN = EVENT_SCHEMA.names.index("person_id")  # in the buffer's rows
# A read batch's hits: stream id, hit, event digest, identifiers (None: aggregate or bot)
_Hits = list[tuple[str, Hit, str, "list[Identifier] | None"]]
_API = Source.API.value
_CONTROL_MARK = f'"{control.CONTROL_SITE}"'.encode()


def is_identified(hit: Hit) -> bool:
    """Return whether a hit may be tied to a person (else it counts only in aggregate)."""
    if hit.trusted:
        # The company's own systems (server keys, CRM and newsletter imports): stored
        # unless the message says analytics was refused.
        return hit.consent.get("analytics", True)
    if hit.source == _API:
        # The Segment API with the site's public key: a browser (analytics.js) speaking,
        # which may identify only with analytics consent, as the pixel and the tag.
        return hit.consent.get("analytics") is True
    return bool(hit.uid)


def _page_path(url: str) -> str:
    return url.split("?", 1)[0].split("#", 1)[0][:512]


@dataclass(slots=True)
class Batch:
    """Person state and writes collected while one read batch is handled."""

    owners: dict[Identifier, str]
    states: dict[str, PersonState]
    deltas: dict[str, PersonDelta] = field(default_factory=dict)
    merges: list[tuple[PersonState, str, dict[str, str]]] = field(default_factory=list)
    merge_log: list[dict[str, str]] = field(default_factory=list)
    conflicts: list[dict[str, str]] = field(default_factory=list)
    withdrawals: list[tuple[Hit, str]] = field(default_factory=list)

    def held_by_trusted(self, ident: Identifier) -> bool:
        """Return whether a trusted source gave ``ident`` to the person who owns it."""
        owner = self.owners.get(ident)
        if owner is None:
            return False
        held = self.states.get(self.canonical(owner))
        return held is not None and trusted_id(ident) in held.trusted

    def canonical(self, pid: str) -> str:
        """Return the person a (possibly just merged) id stands for now."""
        while self.states.get(pid) is not None and self.states[pid].merged_into:
            pid = self.states[pid].merged_into
        return pid


class Ingest:
    """Turns read batches of stream entries into profile writes and buffered event rows."""

    CACHE_PERSONS = 500_000  # persons kept in the identity cache before it starts over

    def __init__(self, r: redis.Redis, config: Config, eventlog: EventLog) -> None:
        self.r = r
        self.config = config
        self.eventlog = eventlog
        self.buffer = EventBuffer()
        self.flushing: AbstractSet[str] = frozenset()  # digests of a flush not committed yet
        self._owners: dict[Identifier, str] = {}  # identity cache, see _learn
        self._states: dict[str, PersonState] = {}
        self._epoch: bytes | None = None
        self._pending: Bulk | None = None  # the last batch's profile writes, not sent yet
        self._inflight: InFlight | None = None  # profile writes sent, replies not read yet
        self._salt: bytes | None = None  # set once anything was ever erased (see reset)
        # With several partitions: the turns on identities (dmp.ingest.identitylock), and
        # the change log through which the workers tell each other what they changed.
        self.identity: IdentityLock | None = None
        self.changes: ChangeLog | None = None
        self._timelines: TimelineWrites | None = None  # returning hits' writes, see _shared
        self._resolved: list[tuple[Hit, str]] = []  # hits resolved, their rows not built yet
        self._fenced = False  # the pending writes begin with the identity lock's fence
        self._inflight_fenced = False  # ... and the writes in flight

    def reset(self) -> None:
        """Forget buffered events and cached identities (on (re)taking the lease)."""
        self.release_identity()
        self.settle()
        self._salt = erasure.salt(self.r)
        migrated = consent_rules.migrate_person_level(self.r)
        if migrated:
            log.info("moved %d persons' consents to the identifiers they were given for", migrated)
        self.buffer = EventBuffer()
        self._owners, self._states, self._epoch = {}, {}, None
        if self.changes is not None:
            self.changes.last = None  # nothing cached: no change since matters

    def take_buffer(self) -> EventBuffer:
        """Return the buffered events for a flush, once their profile writes are applied."""
        self.settle()  # profiles first: an acked event's person is up to date
        buf, self.buffer = self.buffer, EventBuffer()
        return buf

    def handle(
        self, entries: list[tuple[str, bytes | None]], asked: Callable[[], None] | None = None
    ) -> None:
        """Dedup, resolve and apply one read batch of stream entries.

        One round trip asks Redis everything the batch needs (dedup verdicts, the epoch,
        the owners of identifiers not cached). ``asked`` is called as soon as that
        question is answered (the worker asks for its next batch there), and the last
        batch's profile writes are sent after it: Redis works on both while this batch
        is resolved and applied.
        """
        texts = [data for _, data in entries]
        decoded = Hit.many_from_json(texts)
        # A control entry names its site; the bytes test spares the common batch a loop.
        if _CONTROL_MARK in b"".join(filter(None, texts)) and any(
            hit is not None and control.is_control(hit) for hit in decoded
        ):
            self._handle_with_controls(entries, decoded, asked)
            return
        self._handle(entries, decoded, asked)

    def _handle_with_controls(
        self,
        entries: list[tuple[str, bytes | None]],
        decoded: list[Hit | None],
        asked: Callable[[], None] | None,
    ) -> None:
        """Handle a batch holding control entries: the hits before each one, then it."""
        start = 0
        for i, hit in enumerate(decoded):
            if hit is None or not control.is_control(hit):
                continue
            if start < i:
                self._handle(entries[start:i], decoded[start:i], asked)
                asked = None
            self._control(entries[i][0], hit)
            start = i + 1
        if start < len(entries):
            self._handle(entries[start:], decoded[start:], asked)
        elif asked is not None:
            asked()

    def _control(self, stream_id: str, hit: Hit) -> None:
        """Apply a control entry (an erasure, an unmerge) with every earlier write applied
        first, and forget what the caches held (see dmp.people.control)."""
        if self.identity is not None:
            # erasure and unmerge bump the worker epoch: every worker's cache is dropped
            self.identity.acquire()
        self.settle()
        if hit.type == erasure.ERASE:
            report = erasure.apply(self.r, hit)
            gone = set(report.get("erased_ids", ()))
            if gone:
                at = _PERSON_COLUMN
                self.buffer.events = [row for row in self.buffer.events if row[at] not in gone]
            self._salt = erasure.salt(self.r)
        elif hit.type == unmerge.UNMERGE:
            unmerge.apply(self.r, hit)
        else:
            log.error("dropping unknown control entry %s (%s)", stream_id, hit.type)
        self._owners, self._states = {}, {}
        self.buffer.take(stream_id, None)
        self.release_identity()

    def _handle(
        self,
        entries: list[tuple[str, bytes | None]],
        decoded: list[Hit | None],
        asked: Callable[[], None] | None,
    ) -> None:
        buf = self.buffer
        hits = self._triage(entries, decoded)
        unknown = self._uncached(hits)
        bulk = Bulk()
        n_seen = self.eventlog.ask_seen(bulk, [h[2] for h in hits])
        salt = self._salt
        marks = [erasure.mark_key(salt, i) for i in unknown] if salt else []
        bulk.add("MGET", keyspace.WORKER_EPOCH, *self._identifier_keys(unknown), *marks)
        answers = bulk.execute(self.r)
        # Only now the next read and the last batch's writes: sent together with the
        # question, Redis could serve them first (it takes ready connections in no set
        # order), and the question's answer, which this batch waits for, would wait on them.
        if asked is not None:
            asked()
        self._send_writes()
        seen = self.eventlog.seen_in(answers[:n_seen]) if n_seen else [False] * len(hits)
        epoch, *found = answers[n_seen]
        found, marked = found[: len(unknown)], found[len(unknown) :]
        erased = {i for i, m in zip(unknown, marked, strict=True) if m} if marks else set()
        if epoch != self._epoch or len(self._states) > self.CACHE_PERSONS:
            self._drop_cache(epoch)
            unknown = list({i for *_, ids in hits if ids for i in ids})
            found = self._ask_owners(unknown)
            # The epoch moves with an erasure too: the identifiers that were cached are
            # asked for their marks now (an erased person's cookie makes nobody new).
            erased = self._erased_among(unknown)
        # With several partitions this read is optimistic (another worker may be writing):
        # the change log, read once the lock is ours (_take_turn), says what to read again.
        self._learn(unknown, found)
        people = self._sort(hits, seen, erased)
        if self.identity is not None:
            self._shared(people)
        elif people:
            self._resolve_and_apply(people)
        # The rows need nothing serial: built once the lock may be another worker's.
        resolved, self._resolved = self._resolved, []
        buf.events.extend([event_row(hit, pid) for hit, pid in resolved])

    def _triage(
        self, entries: list[tuple[str, bytes | None]], decoded: list[Hit | None]
    ) -> list[tuple[str, Hit, str, list[Identifier] | None]]:
        """Return each readable hit with its stream id, digest and identifiers (None: it
        counts only in aggregate, or is a bot's)."""
        buf = self.buffer
        hits: list[tuple[str, Hit, str, list[Identifier] | None]] = []
        for (stream_id, _), hit in zip(entries, decoded, strict=True):
            if hit is None or not hit.storable():
                log.error("dropping unreadable stream entry %s", stream_id)
                buf.metrics[metrics.counter("dmp_stream_unreadable_total")] += 1
                buf.take(stream_id, None)
                continue
            digest = event_digest(hit.site_id, hit.event_id)
            if hit.type == "consent":
                ids: list[Identifier] | None = [Identifier(IdKind.UID, hit.uid)]
            elif not is_identified(hit) or parse_agent(hit.user_agent).is_bot:
                ids = None
            else:
                ids = identity.identifiers_of(hit)
            hits.append((stream_id, hit, digest, ids))
        return hits

    def _uncached(self, hits: _Hits) -> list[Identifier]:
        """Return the identifiers of ``hits`` whose person is not cached with its state,
        nor the person it was merged into (dropped as changed by another worker, or
        withdrawn)."""
        states, get_owner, uncached = self._states, self._owners.get, set()
        for *_, ids in hits:
            if ids:
                for i in ids:
                    state = states.get(get_owner(i, ""))
                    while state is not None and state.merged_into:
                        state = states.get(state.merged_into)
                    if state is None:
                        uncached.add(i)
        return list(uncached)

    def _sort(
        self, hits: _Hits, seen: list[bool], erased: set[Identifier]
    ) -> list[tuple[Hit, list[Identifier], str]]:
        """Drop duplicates, count set-aside hits and buffer bots' rows; return the hits
        to resolve, each with its identifiers and its touchpoint."""
        buf = self.buffer
        people: list[tuple[Hit, list[Identifier], str]] = []
        flushing = self.flushing
        for (stream_id, hit, digest, ids), was_seen in zip(hits, seen, strict=True):
            if was_seen or digest in buf.digests or digest in flushing:
                buf.metrics[metrics.counter("dmp_events_duplicate_total")] += 1
                buf.take(stream_id, None)
                continue
            buf.take(stream_id, digest)
            if erased and ids and not erased.isdisjoint(ids):
                self._erased_identifier(hit)
            elif ids is not None:
                people.append((hit, ids, touchpoint(hit)))  # built here, outside the lock
            elif not is_identified(hit):
                total, recent = set_aside(hit.source, recenthits.NO_CONSENT)
                buf.metrics[total] += 1
                buf.recent[recent] += 1
                self._aggregate(hit)
            else:
                total, recent = set_aside(hit.source, recenthits.BOT)
                buf.metrics[metrics.counter("dmp_bots_total")] += 1
                buf.metrics[total] += 1
                buf.recent[recent] += 1
                buf.events.append(event_row(hit, None))
        return people

    def _erased_identifier(self, hit: Hit) -> None:
        """Count a hit naming an identifier of an erased person: nobody's any more."""
        self.buffer.metrics[metrics.counter("dmp_events_erased_identifier_total")] += 1
        self._aggregate(hit)

    def _shared(self, people: list[Resolvable]) -> None:
        """Resolve and apply a batch beside other partitions' workers: the returning hits
        (``dmp.ingest.returning``) written without the identity lock while the rest are
        resolved and written in one turn on it, which ends with the batch."""
        self.settle()  # the last turn's writes: a returning hit may be of a person they made
        returning, rest = split(people, self._owners, self._states)
        timelines = self._timelines
        if timelines is None:
            timelines = self._timelines = TimelineWrites(self.r, self.config.timeline_cap)
        if returning:
            timelines.send(returning, self._states)
        try:
            if rest:
                self._locked(rest)
            refused = timelines.refused()
        except BaseException:
            timelines.drop()  # the batch is handled again from the stream
            raise
        cap, states = self.config.timeline_cap, self._states
        for pid, items in returning.items():
            if pid in refused:
                continue
            state = states.get(pid)  # (the cache may have been dropped in the turn)
            if state is not None:
                state.n_tp = min(state.n_tp + len(items), cap)
            self._resolved.extend((hit, pid) for hit, _, _ in items)
        if refused:
            self._again([item for pid in refused for item in returning[pid]], refused)
        self.release_identity()

    def _locked(self, people: list[Resolvable]) -> None:
        """Resolve and apply hits, then write them in a turn on the identity lock (kept
        till the caller lets it go: the writes are sent with its release).

        Resolved before the turn, from the cache: if the change log then shows that
        another worker changed a person or identifier the resolution read, it is undone
        and done again in the turn, from what Redis holds now. Most often nothing it read
        changed, and the turn holds only the writes.
        """
        self._catch_up(people)  # (refused returning hits: their persons were dropped)
        rows = len(self._resolved)
        read = self._persons_read(people)
        batch = self._resolve(people)
        if self._take_turn(people, read):
            self._undo(batch, read, people, rows)
            self._catch_up(people)
            batch = self._resolve(people)
        self._write(batch)

    def _persons_read(self, people: list[Resolvable]) -> set[str]:
        """Return the cached persons resolving ``people`` reads."""
        read: set[str] = set()
        for _, ids, _ in people:
            add_owners(ids, self._owners, self._states, read)
        return read

    def _undo(self, batch: Batch, read: set[str], people: list[Resolvable], rows: int) -> None:
        """Forget what resolving ``people`` changed in the cache, the rows and counters
        (its writes were not sent), so that they are resolved again."""
        states, owners = self._states, self._owners
        for pid in read | set(batch.deltas) | {src.person_id for src, _, _ in batch.merges}:
            states.pop(pid, None)
        for _, ids, _ in people:
            for i in ids:
                owners.pop(i, None)
        del self._resolved[rows:]
        merged = len(batch.merges) + len(batch.merge_log)
        if merged:
            self.buffer.metrics[metrics.counter("dmp_merges_total")] -= merged

    def _again(self, people: list[Resolvable], refused: set[str]) -> None:
        """Handle, under the lock, returning hits whose write was refused: their person was
        merged, erased or marked for a merge by another worker since it was cached."""
        self.buffer.metrics[metrics.counter("dmp_returning_hits_again_total")] += len(people)
        for pid in refused:
            self._states.pop(pid, None)  # read again (its identifiers' owners too)
        self._salt = erasure.salt(self.r)
        gone = self._erased_among(list({i for _, ids, _ in people for i in ids}))
        if gone:
            for hit, ids, _ in people:
                if not gone.isdisjoint(ids):
                    self._erased_identifier(hit)
            people = [item for item in people if gone.isdisjoint(item[1])]
        if people:
            self._locked(people)

    def _erased_among(self, idents: list[Identifier]) -> set[Identifier]:
        """Return those of ``idents`` marked erased (one round trip; none if nothing was
        ever erased)."""
        if not (self._salt and idents):
            return set()
        bulk = Bulk()
        bulk.add("MGET", *(erasure.mark_key(self._salt, i) for i in idents))
        return {i for i, mark in zip(idents, bulk.execute(self.r)[0], strict=True) if mark}

    def _take_turn(self, people: list[Resolvable], read: set[str]) -> bool:
        """Take the identity lock and drop from the cache what other workers changed
        since it was read; return whether that includes any of the persons ``read`` or
        the identifiers of ``people`` (their resolution is then stale)."""
        lock = self.identity
        assert lock is not None
        changes = self.changes
        if changes is None:
            changes = self.changes = ChangeLog(lock.lease.token)

        def ask(bulk: Bulk) -> None:
            bulk.add("GET", keyspace.WORKER_EPOCH)
            changes.ask(bulk)

        # From here to the writes' release, identities are ours alone.
        epoch, entries = lock.acquire(ask)
        behind, persons, idents = changes.read(entries)
        if behind or epoch != self._epoch:
            self._drop_cache(epoch)
            return True
        for pid in persons:
            self._states.pop(pid, None)
        for text in idents:
            self._owners.pop(Identifier.from_text(text), None)
        if read.isdisjoint(persons) and not (
            idents and idents.intersection(i.text for _, ids, _ in people for i in ids)
        ):
            return False
        return True

    def _catch_up(self, people: list[Resolvable]) -> None:
        """Read the owners and persons of ``people`` that are not cached (any more)."""
        stale = self._uncached([("", hit, "", ids) for hit, ids, _ in people])
        if stale:
            self._learn(stale, self._ask_owners(stale))

    def _drop_cache(self, epoch: bytes | None) -> None:
        """Forget every cached identity and person (erasure, unmerge, a gap in the log)."""
        self.settle()
        self._owners, self._states, self._epoch = {}, {}, epoch
        self._salt = erasure.salt(self.r)  # another worker may have erased since

    def _ask_owners(self, idents: list[Identifier]) -> list[bytes | None]:
        """Return the persons Redis names as owners of ``idents`` (one round trip)."""
        if not idents:
            return []
        bulk = Bulk()
        bulk.add("MGET", *self._identifier_keys(idents))
        return bulk.execute(self.r)[0]

    def release_identity(self) -> None:
        """End this worker's turn on identities (several partitions): its writes, then
        what it changed added to the change log (other workers drop just that from their
        caches), then the lock freed.

        On one Redis server the three go in one pipeline, applied in order on one
        connection, and the worker goes on without waiting: whoever takes the lock next
        finds the writes applied. On a Cluster the writes span nodes, so they are
        applied first, then the rest (one slot) follows.
        """
        lock, changes = self.identity, self.changes
        if lock is None or not lock.held:
            return
        if is_cluster(self.r):
            self.settle()
        bulk = self._pending
        if bulk is None:
            self.settle()  # whatever is in flight, before the lock goes
            bulk = self._pending = Bulk()
        if changes is not None:
            changes.publish(bulk)  # its id is read back with the next entries
        lock.release(bulk)
        self._send_writes()

    def _settled(self, inflight: InFlight) -> None:
        """Wait for writes sent; if they began with the identity lock's fence, raise
        IdentityLockLost unless the lock was still ours (see :meth:`_write`)."""
        fenced, self._inflight_fenced = self._inflight_fenced, False
        replies = inflight.wait()
        if fenced and self.identity is not None:
            try:
                self.identity.check(replies[0])
            except IdentityLockLost:
                # Writes queued since (a second turn in the batch) must not follow:
                # the lock is another's. The batch is handled again from the stream.
                self._pending, self._fenced = None, False
                raise

    @staticmethod
    def _identifier_keys(idents: list[Identifier]) -> list[str]:
        return [keyspace.identifier(i.kind.value, i.value) for i in idents]

    def _learn(self, idents: list[Identifier], found: list[bytes | None]) -> None:
        """Cache the owners Redis named for ``idents``, and load their persons' states.

        The worker is the only writer of identities and profiles (it holds the lease, or
        with several partitions the identity lock), so what it wrote stays true in its
        cache; other workers log what they changed (dmp.ingest.identitylock), anything
        else that changes them bumps ``dmp:worker:epoch``, which empties the cache.
        """
        owners, states = self._owners, self._states
        pids = [f.decode() if f else None for f in found]
        for i, pid in zip(idents, pids, strict=True):
            if pid:
                owners[i] = pid
            else:
                owners.pop(i, None)  # unlinked meanwhile
        missing = {pid for pid in pids if pid and pid not in states}
        if missing:
            self.settle()
            states.update(load_states(self.r, sorted(missing)))

    def _aggregate(self, hit: Hit) -> None:
        buf = self.buffer
        buf.stats["events_aggregate"] += 1
        buf.metrics[metrics.counter("dmp_events_aggregate_total")] += 1
        site, day = hit.site_id, utc_day(hit.timestamp).replace("-", "")
        agent = parse_agent(hit.user_agent)
        if agent.is_bot:
            buf.aggregates[(site, day, "bots")] += 1
            return
        buf.aggregates[(site, day, "hits")] += 1
        buf.aggregates[(site, day, f"event:{hit.event}")] += 1
        buf.aggregates[(site, day, f"device:{agent.device}")] += 1
        if hit.url:
            buf.aggregates[(site, day, f"url:{_page_path(hit.url)}")] += 1
        for topic in hit.topics:
            buf.aggregates[(site, day, f"topic:{topic}")] += 1

    def _resolve_and_apply(self, people: list[Resolvable]) -> None:
        self._write(self._resolve(people))

    def _resolve(self, people: list[Resolvable]) -> Batch:
        """Resolve and apply ``people`` to their cached persons; return the writes."""
        owners, states = self._owners, self._states
        batch = Batch(owners, states)
        for hit, ids, tp in people:
            if hit.type == "consent":
                pid = owners.get(ids[0])
                if pid:
                    batch.withdrawals.append((hit, batch.canonical(pid)))
                continue
            self._apply(batch, hit, ids, tp)
        return batch

    def _apply(self, batch: Batch, hit: Hit, ids: list[Identifier], tp: str) -> None:
        """Resolve one hit and fold it into its person's state and delta."""
        if len(ids) == 1 and not hit.traits and ids[0] in batch.owners:
            # The common case, a known browser or user coming back: nothing to resolve.
            pid = batch.canonical(batch.owners[ids[0]])
            self._record(batch, hit, pid, ids, tp, grew=False)
            return
        owners = {i: batch.canonical(batch.owners[i]) for i in ids if i in batch.owners}
        emails = {pid: batch.states[pid].email for pid in owners.values()}
        res = identity.resolve(ids, owners, emails)
        pid = res.person_id
        if res.is_new:
            batch.states[pid] = PersonState(pid)
        state = batch.states[pid]
        delta = batch.deltas.setdefault(pid, PersonDelta())
        trusted = hit.trusted
        own = claims.browser_person(ids, owners)
        contact_ok = claims.may_add_contact(trusted, res.is_new, own, state)
        conflicts = list(res.conflicts)
        for other, link in res.merges:
            if claims.may_merge(trusted, batch.states[batch.canonical(other)]):
                self._merge(batch, other, pid, link, hit)
            else:
                reason = f"a browser's claim ({link.kind.value}) would move contact data"
                conflicts.append(identity.Conflict(pid, other, link, reason))
        for conflict in conflicts:
            batch.conflicts.append(
                {
                    "person_id": conflict.person_id,
                    "other_id": conflict.other_id,
                    "identifier": conflict.identifier.kind.value,
                    "reason": conflict.reason,
                    "event_id": hit.event_id,
                    "site_id": hit.site_id,
                    "at": str(hit.received_at),
                }
            )
        for ident in claims.linkable(res.claims, contact_ok):
            delta.identifiers.add(ident)
            batch.owners[ident] = pid
            if ident.kind is IdKind.EMAIL:
                state.email = ident.value
            elif ident.kind is IdKind.PHONE:
                state.contact.add("phone")
            elif ident.kind is IdKind.CRM:
                state.contact.add("crm")
        if trusted:
            mine = [i for i in ids if batch.canonical(batch.owners.get(i, "")) == pid]
            new = {trusted_id(i) for i in mine} - state.trusted
            new |= {trusted_trait(name[:128]) for name in hit.traits} - state.trusted
            if new:
                state.trusted |= new
                delta.trusted |= new
        traits = (
            claims.writable_traits(trusted, hit.traits, state, contact_ok) if hit.traits else {}
        )
        if traits:
            if contact_ok and identity.has_address(traits):
                state.contact.add("address")
            for name, value in traits.items():
                delta.traits[name[:128]] = dump_json(value)
        self._record(batch, hit, pid, ids, tp, grew=True)

    def _record(
        self, batch: Batch, hit: Hit, pid: str, ids: list[Identifier], tp: str, *, grew: bool
    ) -> None:
        """Add a resolved hit to its person: consent changes, timeline, tier, event row."""
        state = batch.states[pid]
        delta = batch.deltas.get(pid)
        if delta is None:
            delta = batch.deltas[pid] = PersonDelta()
        if hit.consent:
            self._consent(batch, hit, state, delta, ids)
        ts = hit.timestamp
        if not delta.first_seen or ts < delta.first_seen:
            delta.first_seen = ts
        delta.touchpoints[tp] = ts
        if grew or state.tier is Tier.UNKNOWN:
            self._promote(state, delta, hit)
        self._resolved.append((hit, pid))

    @staticmethod
    def _consent(
        batch: Batch, hit: Hit, state: PersonState, delta: PersonDelta, ids: list[Identifier]
    ) -> None:
        """Record the consent changes a hit brings for the identifiers it speaks for, in
        event-time order (consents.applies): a state newer than the hit stays."""
        pid = state.person_id
        owners, canonical = batch.owners, batch.canonical
        said = None
        if len(ids) == 1 and owners.get(ids[0]) == pid:
            # The common case: a returning browser, most often saying what it said before.
            said = (ids[0], hit.consent)
            if state.last_said == said:
                return
            mine = ids
        else:  # the hit's identifiers this person holds (a claim may not have linked some)
            mine = [i for i in ids if canonical(owners.get(i, "")) == pid]
        if hit.trusted and state.email and not any(i.kind is IdKind.EMAIL for i in ids):
            # The company's system speaks of a user it knows: the consent is for their
            # email (a server's "newsletter subscribed" carries a user id, not the address).
            mine = [*mine, Identifier(IdKind.EMAIL, state.email)]
        stale, proofs = False, len(delta.proofs)
        for ident in consent_rules.holders(hit, mine, batch.held_by_trusted):
            stale |= Ingest._change(hit, state, delta, ident)
        if said is not None:
            # Skip the browser's next identical hit only if the states say what it said.
            state.last_said = None if stale else said
        elif stale or len(delta.proofs) != proofs:
            state.last_said = None  # states changed: what the browser said last may not hold

    @staticmethod
    def _change(hit: Hit, state: PersonState, delta: PersonDelta, ident: Identifier) -> bool:
        """Apply what a hit says of one identifier's states, in event-time order; return
        whether a newer state held kept some of it from applying."""
        consents, prefix, text = state.consents, consent_rules.STATE_PREFIX, ident.text
        at = hit.timestamp
        changed, stale = {}, False
        for category, granted in hit.consent.items():
            name = f"{prefix}{category}|{text}"  # consent_rules.state_field, inlined
            held = consents.get(name)
            if held is not None:  # consent_rules.applies, inlined
                if held[0] is granted:
                    continue
                if held[1] > at:  # a newer state stays: this hit is not what holds
                    stale = True
                    continue
            consents[name] = (granted, at)
            delta.consents[name] = f"{int(granted)}:{at}"
            changed[category] = granted
        if changed:
            delta.proofs += (consent_rules.proof(hit, changed, ident),)
        return stale

    def _promote(self, state: PersonState, delta: PersonDelta, hit: Hit) -> None:
        tier = tier_for(state.email, state.contact, True)
        if tier.rank <= state.tier.rank:
            return
        point = {
            "id": f"{hit.event_id}:tier:{tier.value}",
            "t": hit.timestamp,
            "type": "tier",
            "event": "tier_promoted",
            "source": hit.source,
            "site": hit.site_id,
            "channel": hit.channel,
            "from": state.tier.value,
            "to": tier.value,
        }
        delta.touchpoints[dump_json(point)] = hit.timestamp
        state.tier = tier

    def _merge(self, batch: Batch, other: str, target: str, link: Identifier, hit: Hit) -> None:
        """Fold person ``other`` into ``target`` locally and schedule the stored part."""
        other = batch.canonical(other)
        if other == target:
            return
        src, dst = batch.states[other], batch.states[target]
        dst.email = dst.email or src.email
        dst.contact |= src.contact
        for name, theirs in src.consents.items():  # the newer state of each wins
            mine = dst.consents.get(name)
            if mine is None or theirs[1] > mine[1]:
                dst.consents[name] = theirs
        dst.trusted |= src.trusted
        if src.tier.rank > dst.tier.rank:
            dst.tier = src.tier
        dst.n_tp += src.n_tp
        delta = batch.deltas.setdefault(target, PersonDelta())
        if src.first_seen:
            delta.see(src.first_seen)
        pending = batch.deltas.pop(other, None)
        if pending:
            delta.absorb(pending)
        src.merged_into = target  # owners still naming it lead on through canonical()
        entry = {
            "from": other,
            "into": target,
            "reason": f"{link.kind.value} links both persons",
            "identifier": link.kind.value,
            "by": "trusted" if hit.trusted else "claim",
            "source": hit.source,
            "event_id": hit.event_id,
            "site_id": hit.site_id,
            "at": str(hit.received_at),
        }
        if src.exists:
            batch.merges.append((src, target, entry))
        else:
            batch.merge_log.append(entry)  # nothing stored yet: only the log entry is left
        self.buffer.metrics[metrics.counter("dmp_merges_total")] += 1

    def settle(self) -> None:
        """Send the last batch's profile writes if they wait, and wait until applied."""
        self._send_writes()
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            self._settled(inflight)

    def _send_writes(self) -> None:
        """Send the pending profile writes, after the earlier ones are applied (in order)."""
        if self._pending is None:
            return
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            self._settled(inflight)
        bulk, self._pending = self._pending, None
        self._inflight = bulk.send(self.r)
        self._inflight_fenced, self._fenced = self._fenced, False

    def _write(self, batch: Batch) -> None:
        if self._pending is not None:  # a second turn in one batch (returning hits again)
            self._send_writes()
        if self.changes is not None:
            self._note_changes(batch)
        lock = self.identity
        if batch.merges:
            self.settle()
            if lock is not None:  # merges move data: only while the lock is surely ours
                fence = Bulk()
                lock.fence(fence)
                lock.check(fence.execute(self.r)[0])
            merge_persons(self.r, batch.merges)
        cap = self.config.timeline_cap
        shared, bulk = BatchWrites(), Bulk()
        # Fenced: the lock's holder read in the same round trip as the writes. A worker
        # that stalled past the lock's time learns it there, before its flush acks the
        # entries: it drops the batch and handles it again from the stream (the writes
        # that landed meanwhile are re-applied over themselves from re-read state).
        self._fenced = lock is not None
        if lock is not None:
            lock.fence(bulk)
        for pid, delta in batch.deltas.items():
            write_delta(bulk, shared, batch.states[pid], delta, cap)
        shared.queue(bulk)
        # Sent with the next batch's question (see handle), so that Redis applies them
        # while that batch is worked on; every read that could depend on them is served
        # from the cache, and the flush settles them before it acks anything.
        self._pending = bulk
        if not (batch.merge_log or batch.conflicts or batch.withdrawals):
            return
        self.settle()
        with self.r.pipeline(transaction=False) as pipe:
            for entry in batch.merge_log:
                pipe.xadd(keyspace.MERGES, entry, maxlen=1_000_000, approximate=True)
            for conflict in batch.conflicts:
                pipe.xadd(keyspace.CONFLICTS, conflict, maxlen=1_000_000, approximate=True)
            if batch.conflicts:
                metrics.incr(
                    pipe, metrics.counter("dmp_identity_conflicts_total"), len(batch.conflicts)
                )
            pipe.execute()
        for hit, pid in batch.withdrawals:
            withdraw_cookie(self.r, pid, hit)
            batch.owners.pop(Identifier(IdKind.UID, hit.uid), None)
            batch.states.pop(pid, None)  # re-read on its next hit

    def _note_changes(self, batch: Batch) -> None:
        """Log the persons and identifiers this batch changes, for the other workers."""
        persons = set(batch.deltas)
        persons.update(src.person_id for src, _, _ in batch.merges)
        persons.update(entry["from"] for entry in batch.merge_log)
        persons.update(pid for _, pid in batch.withdrawals)
        idents = {i.text for delta in batch.deltas.values() for i in delta.identifiers}
        idents.update(Identifier(IdKind.UID, hit.uid).text for hit, _ in batch.withdrawals)
        self.changes.note(persons, idents)  # type: ignore[union-attr]


def withdraw_cookie(r: redis.Redis, pid: str, hit: Hit) -> None:
    """Unlink a cookie whose browser withdrew analytics consent, and record the withdrawal
    (its states stay beside the person, as proof, under the cookie they were given for).

    The cookie is unlinked whatever the time; a state changes only in event-time order
    (a state set later than the withdrawal stays)."""
    ident = Identifier(IdKind.UID, hit.uid)
    states = load_states(r, [pid])
    state = states[pid]
    changed = {
        category: granted
        for category, granted in hit.consent.items()
        if consent_rules.applies(
            state.consents.get(consent_rules.state_field(category, ident)), granted, hit.timestamp
        )
    }
    # Cluster-safe (the link keys are spread, the person's keys on its own slot, STATS
    # on {dmp}'s): the link goes first, so that no hit reaches the person through it
    # once its states say withdrawn; then the person's part in one MULTI on its slot.
    with r.pipeline(transaction=False) as pipe:
        for key in id_keys(ident):
            pipe.delete(key)
        pipe.execute()
    with r.pipeline(transaction=True) as pipe:
        pipe.srem(keyspace.person(pid, "identifiers"), ident.text)
        pipe.scard(keyspace.person(pid, "identifiers"))
        if changed:
            pipe.hset(
                keyspace.person(pid),
                mapping={
                    consent_rules.state_field(c, ident): consent_rules.state_value(g, hit.timestamp)
                    for c, g in changed.items()
                },
            )
            pipe.rpush(
                keyspace.person(pid, consent_rules.LOG_FACET),
                consent_rules.proof(hit, changed, ident),
            )
        pipe.zadd(keyspace.person(pid, "touchpoints"), {touchpoint(hit): hit.timestamp})
        remaining = pipe.execute()[1]
    tier = tier_for(state.email, state.contact, remaining > 0)
    if tier != state.stored_tier:
        r.hset(keyspace.person(pid), "tier", tier.value)
        with r.pipeline(transaction=True) as pipe:  # both counts move together, on {dmp}
            pipe.hincrby(keyspace.STATS, f"persons:{state.stored_tier.value}", -1)
            pipe.hincrby(keyspace.STATS, f"persons:{tier.value}", 1)
            pipe.execute()
    # Last, once all is written: no event row says it, so the next incremental matrix
    # build is told to refold them.
    r.sadd(keyspace.MATRIX_TOUCHED, pid)
    log.info("person %s withdrew analytics consent; cookie unlinked, tier %s", pid, tier.value)
