"""Workers of several partitions take turns on identities and profiles.

One worker (one partition) at a time holds the identity lock (``keyspace.IDENTITY_LOCK``)
while it resolves the hits of a batch that need it, applies them and writes their
profile writes and merges: as if one worker wrote everything, so a merge is never lost
or doubled and no profile write goes to a person merged away. Decoding, the batch's
question (dedup, owners not cached), triage, the returning hits (known persons coming
back, written without the lock: ``dmp.ingest.returning``), touchpoints, event rows and
the Parquet flush run outside it. A turn ends with its batch: its writes, what it
changed (logged) and the lock's release go in one pipeline (on a Cluster, the writes are
applied first); a waiting worker asks again every millisecond, and the round trip that
takes the lock also reads the change log.

Before it lets go, a holder that wrote appends what it changed (the persons it wrote or
merged, the identifiers it linked or unlinked) to the change log
(``keyspace.IDENTITY_CHANGES``, a capped stream; :class:`ChangeLog`); a worker reads the
entries since its last as it takes its turn and drops exactly those persons and
identifiers from its cache, or all of it if it fell behind the cap (each entry names the
one before it, so a gap shows) or on its first turn. Each batch of profile writes asks
who holds the lock in the same round trip (:meth:`IdentityLock.fence`): a worker that
stalled past the lock's time learns it as it reads the replies, before its flush acks
anything. Writers outside the workers (erasure, unmerge, retention, imports) bump
``keyspace.WORKER_EPOCH`` instead, which empties every cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

from dmp.storage import keyspace
from dmp.storage.bulk import Bulk
from dmp.storage.locks import Lease

SPIN_SECONDS = 0.001  # a waiter asks again this often
CHANGES_KEPT = 1000  # change log entries kept (about): a worker further behind drops all


class IdentityLockLost(redis.RedisError):
    """This worker's turn on the identity lock ran out (it stalled past the lock's time)
    and another worker may have taken it: its batch is handled again from the stream."""


class IdentityLock:
    """One worker's turns on the identity lock."""

    def __init__(self, r: redis.Redis, seconds: float, token: str) -> None:
        self.r = r
        self.lease = Lease(r, keyspace.IDENTITY_LOCK, seconds, token)
        self.held = False
        self._renewed = float("-inf")

    def acquire(self, ask: Callable[[Bulk], None] | None = None) -> list[Any]:
        """Hold the lock (renewed past a third of its time), waiting for it if need be;
        return the replies to the questions ``ask`` queues, asked in the round trip that
        takes it when it is free (else once it is taken)."""
        bulk = Bulk()
        now = time.monotonic()
        if not (self.held and now - self._renewed < self.lease.seconds / 3):
            self.lease.queue_take(bulk)
            if ask is not None:
                ask(bulk)
            took, *replies = bulk.execute(self.r)
            answered = bool(took)
            while not took:  # waiting: only the lock is asked for
                time.sleep(SPIN_SECONDS)
                took = self.lease.take()
            self.held, self._renewed = True, time.monotonic()
            if answered:
                return replies
        if ask is None:
            return []
        ask(bulk)
        return bulk.execute(self.r)

    def fence(self, bulk: Bulk) -> None:
        """Queue, first in a batch of writes, the question its :meth:`check` answers."""
        bulk.add("GET", keyspace.IDENTITY_LOCK)

    def check(self, holder: bytes | None) -> None:
        """Raise :class:`IdentityLockLost` unless ``holder`` (the reply to :meth:`fence`)
        names this worker."""
        if holder != self.lease.token.encode():
            raise IdentityLockLost(f"the identity lock is no longer ours (held by {holder!r})")

    def release(self, bulk: Bulk | None = None) -> None:
        """Let the lock go (only if this worker holds it); with ``bulk``, queue it there
        after the writes queued before it (they are applied before it is free)."""
        if self.held:
            self.held = False
            if bulk is None:
                self.lease.release()
            else:
                self.lease.queue_release(bulk)


class ChangeLog:
    """One worker's reading of, and additions to, the identity change log."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.last: bytes | None = None  # the last entry read (or written) by this worker
        self.persons: set[str] = set()  # changed by this worker since it took the lock
        self.idents: set[str] = set()  # identifier texts linked or unlinked meanwhile

    def ask(self, bulk: Bulk) -> None:
        """Queue the question for the entries since the last read (the newest one, the
        first time: a worker that starts has nothing cached)."""
        key = keyspace.IDENTITY_CHANGES
        if self.last is None:
            bulk.add("XREVRANGE", key, "+", "-", "COUNT", 1)
        else:
            bulk.add("XRANGE", key, b"(" + self.last, "+")

    def read(self, reply: list[Any]) -> tuple[bool, set[str], set[str]]:
        """Return (everything stale, stale persons, stale identifier texts) from the reply
        to :meth:`ask`: what other workers changed since this one last looked."""
        if self.last is None:
            # A first turn: whatever was cached before it is read again (as after a gap).
            self.last = reply[0][0] if reply else b"0-0"
            return True, set(), set()
        persons: set[str] = set()
        idents: set[str] = set()
        behind = False
        for entry_id, fields in reply:
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            behind |= values.get(b"prev") != self.last  # trimmed past ours: a gap
            self.last = entry_id
            if values.get(b"by") == self.token.encode():
                continue
            persons.update(values.get(b"persons", b"").decode().split())
            idents.update(filter(None, values.get(b"ids", b"").decode().split("\n")))
        return behind, persons, idents

    def note(self, persons: set[str], idents: set[str]) -> None:
        """Remember persons and identifier texts this worker changed (published on release)."""
        self.persons |= persons
        self.idents |= idents

    def publish(self, bulk: Bulk) -> bool:
        """Queue the entry of what this worker changed, if anything; return whether queued.

        Its id is not needed: the next :meth:`read` meets the entry, this worker's own,
        and skips it."""
        if not (self.persons or self.idents):
            return False
        bulk.add(
            "XADD",
            keyspace.IDENTITY_CHANGES,
            "MAXLEN",
            "~",
            CHANGES_KEPT,
            "*",
            "by",
            self.token,
            "prev",
            self.last or b"0-0",
            "persons",
            " ".join(sorted(self.persons)),
            "ids",
            "\n".join(sorted(self.idents)),  # identifier values may hold spaces
        )
        self.persons, self.idents = set(), set()
        return True
