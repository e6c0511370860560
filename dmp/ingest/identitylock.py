"""Workers of several partitions take turns on identities and profiles.

One worker (one partition) at a time holds the identity lock (``keyspace.IDENTITY_LOCK``)
while it resolves a batch's hits, applies them and writes the profile writes and merges:
as if one worker wrote everything, so a merge is never lost or doubled and no profile
write goes to a person merged away. Decoding, dedup, user agents, event rows and the
Parquet flush run outside it, in parallel.

A holder writes, then bumps ``keyspace.WORKER_EPOCH`` before it lets go; a worker that
takes the lock and finds the epoch moved drops its identity cache (dmp.ingest.batch).
While nobody else waits (``keyspace.IDENTITY_WANTED``) the holder keeps the lock across
batches, and with it its cache and the pipelining of its writes.
"""

from __future__ import annotations

import time

import redis

from dmp.storage import keyspace
from dmp.storage.locks import Lease

WANTED_MS = 1000  # a waiter says so again before this runs out
SPIN_SECONDS = 0.002  # a waiter asks again this often


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
