"""Redis locks fenced by token: a holder is named by a random token under the lock's key,
the key expires unless renewed, and only the holder renews or releases it (atomically).

:class:`Lease` is the primitive (the ingest worker takes and renews one per batch);
:func:`hold` holds a :class:`Lease` for a block of work, renewed by a heartbeat thread
(matrix builds, segment runs, moves of the lookup sets).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from dmp.storage.bulk import Bulk

log = logging.getLogger(__name__)

HOLD_SECONDS = 30.0  # a held lock expires this long after its holder stopped renewing it

# Take the lock if free, or renew it if ours: one step, so a lease cannot expire and be
# taken by another between a check and a renewal.
_TAKE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Release a lock whose token begins with ARGV[1] (any holder of one process).
_RELEASE_PREFIXED = """
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, #ARGV[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Busy(RuntimeError):
    """Another holder has the lock (or this one lost it)."""


class Lease:
    """One holder's claim on ``key``: ``token`` while it lasts, ``seconds`` unless renewed."""

    def __init__(self, r: redis.Redis, key: str, seconds: float, token: str = "") -> None:
        self.r, self.key, self.seconds = r, key, seconds
        self.token = token or secrets.token_hex(8)
        self.lost = threading.Event()  # set by hold()'s heartbeat once another has the key

    def take(self) -> bool:
        """Take the lease if it is free, renew it if it is ours; return whether we hold it."""
        return bool(self.r.eval(_TAKE, 1, self.key, self.token, self._ms()))

    def renew(self) -> bool:
        """Extend the lease if we still hold it; return whether we do."""
        return bool(self.r.eval(_RENEW, 1, self.key, self.token, self._ms()))

    def held(self) -> bool:
        """Return whether this holder still has the lease."""
        return self.r.get(self.key) == self.token

    def release(self) -> None:
        """Give the lease up (only if it is still ours)."""
        self.r.eval(_RELEASE, 1, self.key, self.token)

    def queue_take(self, bulk: Bulk) -> None:
        """Queue :meth:`take` in ``bulk`` (its reply: 1 if held)."""
        bulk.add("EVAL", _TAKE, 1, self.key, self.token, self._ms())

    def queue_release(self, bulk: Bulk) -> None:
        """Queue :meth:`release` in ``bulk``, after the writes queued before it."""
        bulk.add("EVAL", _RELEASE, 1, self.key, self.token)

    def _ms(self) -> int:
        return max(1, int(self.seconds * 1000))


def release_prefixed(r: redis.Redis, key: str, prefix: str) -> bool:
    """Release ``key`` if its holder's token begins with ``prefix``; return whether it did."""
    return bool(r.eval(_RELEASE_PREFIXED, 1, key, prefix))


@contextmanager
def hold(
    r: redis.Redis,
    key: str,
    wait_seconds: float = 0.0,
    busy: str = "the lock is held",
    token: str = "",
) -> Iterator[Lease]:
    """Hold the lock ``key`` for the block, renewed every third of HOLD_SECONDS by a
    heartbeat thread; raise Busy(``busy``) if another holds it past ``wait_seconds``.
    A holder that dies loses it within HOLD_SECONDS; one that stalled that long finds
    ``lease.lost`` set and must not write what the lock guards."""
    lease, deadline = Lease(r, key, HOLD_SECONDS, token), time.monotonic() + wait_seconds
    while not lease.take():
        if time.monotonic() >= deadline:
            raise Busy(busy)
        time.sleep(0.2)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(lease, stop), name="dmp-lock", daemon=True)
    beat.start()
    try:
        yield lease
    finally:
        stop.set()
        lease.release()


def _heartbeat(lease: Lease, stop: threading.Event) -> None:
    while not stop.wait(lease.seconds / 3):
        try:
            renewed = lease.renew()
        except redis.RedisError:
            log.warning("could not renew the lock %s", lease.key, exc_info=True)
            continue
        if not renewed:  # we stalled past its time and another took it: say so, stop
            lease.lost.set()
            log.warning("lost the lock %s: another holder has it", lease.key)
            return
