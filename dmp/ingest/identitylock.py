"""Workers of several partitions take turns on identities and profiles.

One worker (one partition) at a time holds the identity lock (``keyspace.IDENTITY_LOCK``)
while it resolves a batch's hits, applies them and writes the profile writes and merges:
as if one worker wrote everything, so a merge is never lost or doubled and no profile
write goes to a person merged away. Decoding, the batch's question (dedup, owners not
cached), triage, touchpoints, event rows and the Parquet flush run outside it.

Before it lets go, a holder that wrote appends what it changed (the persons it wrote or
merged, the identifiers it linked or unlinked) to the change log
(``keyspace.IDENTITY_CHANGES``, a capped stream; :class:`ChangeLog`); a worker reads the
entries since its last as it takes its turn and drops exactly those persons and
identifiers from its cache, or all of it if it fell behind the cap (each entry names the
one before it, so a gap shows) or on its first turn. Each batch of profile writes asks
who holds the lock in the same round trip (:meth:`IdentityLock.fence`): a worker that
stalled past the lock's time learns it before its flush acks anything. Writers outside
the workers (erasure, unmerge, retention, imports) bump ``keyspace.WORKER_EPOCH``
instead, which empties every cache.
While nobody else waits (``keyspace.IDENTITY_WANTED``) the holder keeps the lock across
batches, and with it its cache and the pipelining of its writes.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from dmp.storage import keyspace
from dmp.storage.bulk import Bulk
from dmp.storage.locks import Lease

WANTED_MS = 1000  # a waiter says so again before this runs out
SPIN_SECONDS = 0.002  # a waiter asks again this often
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
        self.yielded = False  # let go because another waited: give it a moment first

    def acquire(self) -> None:
        """Hold the lock (renewed past a third of its time), waiting for it if need be."""
        now = time.monotonic()
        if self.held and now - self._renewed < self.lease.seconds / 3:
            return
        if self.yielded:
            self.yielded = False
            time.sleep(SPIN_SECONDS * 2)  # the waiter that asked us takes it first
        said = float("-inf")
        while not self.lease.take():
            if time.monotonic() - said > WANTED_MS / 2000:
                self.r.set(keyspace.IDENTITY_WANTED, self.lease.token, px=WANTED_MS)
                said = time.monotonic()
            time.sleep(SPIN_SECONDS)
        self.held, self._renewed = True, time.monotonic()

    def fence(self, bulk: Bulk) -> None:
        """Queue, first in a batch of writes, the question its :meth:`check` answers."""
        bulk.add("GET", keyspace.IDENTITY_LOCK)

    def check(self, holder: bytes | None) -> None:
        """Raise :class:`IdentityLockLost` unless ``holder`` (the reply to :meth:`fence`)
        names this worker."""
        if holder != self.lease.token.encode():
            raise IdentityLockLost(f"the identity lock is no longer ours (held by {holder!r})")

    def wanted_by_other(self, wanted: bytes | str | None) -> bool:
        """Return whether the IDENTITY_WANTED value read names another worker."""
        if not wanted:
            return False
        name = wanted.decode() if isinstance(wanted, bytes) else wanted
        return name != self.lease.token

    def release(self, *, yielded: bool = False) -> None:
        """Let the lock go (only if this worker holds it)."""
        if self.held:
            self.held = False
            self.yielded = yielded
            self.lease.release()


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

        The caller reads the new entry's id back with :meth:`published`."""
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

    def published(self, entry_id: bytes) -> None:
        """Take the id of this worker's own new entry as the last one read."""
        self.last = entry_id
