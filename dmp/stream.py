"""The ingest stream: collectors append hits, the worker's consumer group reads them."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from dmp import keyspace
from dmp.bulk import Bulk
from dmp.records import Hit

if TYPE_CHECKING:
    from dmp.spool import Spool

log = logging.getLogger(__name__)

FIELD = "h"  # each stream entry carries one field: the hit as JSON


def enqueue(
    r: redis.Redis,
    hits: Iterable[Hit],
    counters: dict[str, int],
    *,
    atomic: bool,
    also: Iterable[tuple[Any, ...]] = (),
) -> None:
    """Append hits to the stream and bump counters in one round trip.

    With ``atomic`` the hits land all together or not at all (a Segment batch), and
    with them the commands in ``also`` (an import remembers the rows it queued).
    """
    # Raw RESP in one write: redis-py's pipeline costs more CPU than the rest of a pixel hit.
    bulk = Bulk()
    if atomic:
        bulk.add("MULTI")
    for hit in hits:
        bulk.add("XADD", keyspace.STREAM, "*", FIELD, hit.to_json())
    for field, amount in counters.items():
        bulk.add("HINCRBY", keyspace.METRICS, field, amount)
    for command in also:
        bulk.add(*command)
    if atomic:
        bulk.add("EXEC")
    bulk.execute(r)


def ensure_group(r: redis.Redis) -> None:
    """Create the worker's consumer group (and the stream) unless they exist."""
    try:
        r.xgroup_create(keyspace.STREAM, keyspace.GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def pending_count(r: redis.Redis) -> int:
    """Return how many hits wait to be stored (the worker trims what it has acked)."""
    return int(r.xlen(keyspace.STREAM))


class Appender:
    """Appends hits without waiting for Redis's answer: the pixel's path.

    A synchronous round trip to Redis costs a pixel hit about as much as all the rest of
    its work. Each thread keeps a connection of its own (made outside the pool, so a
    failed one never holds a pool slot) and sends a hit's XADD without reading the
    answer; answers are read back in bunches, once they are there, and a stalled Redis
    slows the sender down instead of growing a backlog without bound. Until its answer is
    read a hit is kept: if the connection fails or Redis refuses the write, the hit goes
    to the process's :class:`~dmp.spool.Spool` instead (it is replayed with its event id,
    so one that did reach Redis is dropped by the worker's dedup), and so does every hit
    that arrives while the spool holds anything. Metric counters are summed here and sent
    by the spool's helper thread about once a second.
    """

    READ_EVERY = 64  # unread answers that make the sender look for them
    MAX_UNREAD = 10_000  # unread answers that make the sender wait for them
    COUNT_SECONDS = 1.0
    STALE_SECONDS = 0.5  # answers left unread this long are read by the helper thread ...
    TIMEOUT_SECONDS = 5.0  # ... and Redis not answering for this long counts as gone

    def __init__(self, r: redis.Redis, spool: Spool | None = None) -> None:
        self._r = r
        pool = r.connection_pool
        # Our own connections: no retries (a failure spools at once) and a timeout (a
        # hung Redis must not hang the pixel: its hits are spooled instead).
        kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
        kwargs["socket_timeout"] = kwargs["socket_connect_timeout"] = self.TIMEOUT_SECONDS
        self._connect = lambda: pool.connection_class(**kwargs)
        self._local = threading.local()
        self._channels: list[_Channel] = []  # every thread's, for the helper thread
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._helper: threading.Thread | None = None
        self._pid = os.getpid()
        self.spool = spool
        self.lost = 0  # hits neither Redis nor the spool took

    def _channel(self) -> _Channel:
        channel = getattr(self._local, "channel", None)
        if channel is None:
            channel = self._local.channel = _Channel(self._connect())
            with self._lock:
                self._channels.append(channel)
        return channel

    def append(self, hits: list[Hit], counters: dict[str, int]) -> None:
        """Send the hits' XADDs (or spool them); count ``counters`` (sent within a second).

        Raises redis.RedisError only without a spool, when Redis is gone.
        """
        self.count(counters)
        if not hits:
            return
        lines = [hit.to_json() for hit in hits]
        channel = self._channel()
        with channel.lock:
            if self.spool is not None and self.spool.active:
                self._to_spool(lines)
                return
            bulk = Bulk()
            for line in lines:
                bulk.add("XADD", keyspace.STREAM, "*", FIELD, line)
            try:
                channel.conn.send_packed_command([bulk.packed()], check_health=False)
                channel.unread.extend(lines)
                channel.sent = time.monotonic()
                if len(channel.unread) >= self.READ_EVERY:
                    self._read_answers(channel, wait=len(channel.unread) > self.MAX_UNREAD)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                self._fail(channel, exc, lines)

    def append_atomic(self, hits: list[Hit], counters: dict[str, int]) -> bool:
        """Put hits on the stream all together, waiting for Redis, or spool them all.

        Return False if neither Redis nor the spool (full, or none) took them. While the
        spool holds hits, these go there too, in order, without trying Redis.
        """
        if self.spool is None or not self.spool.active:
            try:
                enqueue(self._r, hits, counters, atomic=True)
                return True
            except redis.RedisError:
                if self.spool is None:
                    return False
        self.count(counters)
        if self.spool.append([hit.to_json() for hit in hits]):
            return True
        self.lost += len(hits)
        return False

    def count(self, counters: dict[str, int]) -> None:
        """Add to metric counters; they reach Redis within about a second."""
        if counters:
            with self._lock:
                self._counts.update(counters)
            self._start_helper()

    def sync(self) -> None:
        """Send the counter sums and wait until Redis answered all this process sent."""
        for channel in list(self._channels):
            with channel.lock:
                try:
                    while channel.unread:
                        self._read_answers(channel, wait=True)
                except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                    self._fail(channel, exc, [])
        self._send_counts()

    def _read_answers(self, channel: _Channel, *, wait: bool) -> None:
        """Read the answers that are there (with ``wait``, all of them); the caller holds
        the channel's lock. A refused hit goes to the spool."""
        conn = channel.conn
        while channel.unread and (wait or conn.can_read(timeout=0)):
            try:
                conn.read_response(disable_decoding=True)
            except redis.ResponseError as exc:  # OOM, MISCONF (disk), READONLY replica …
                line = channel.unread.popleft()
                if self.spool is None:
                    self.lost += 1
                    log.error("Redis refused a pixel hit: %s", exc)
                else:
                    self._to_spool([line])
                continue
            channel.unread.popleft()

    def _fail(self, channel: _Channel, exc: BaseException, lines: list[str]) -> None:
        """Spool what the failed connection held unanswered, and ``lines``."""
        channel.conn.disconnect()  # the next send connects again
        held = [*channel.unread, *lines]
        channel.unread.clear()
        if self.spool is None:
            self.lost += len(held)
            raise exc
        self._to_spool(held)

    def _to_spool(self, lines: list[str]) -> None:
        assert self.spool is not None
        if lines and not self.spool.append(lines):
            self.lost += len(lines)

    # -- the helper thread: counters, and answers a quiet thread left unread ------------

    def _start_helper(self) -> None:
        if self._helper is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._helper is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self._helper = threading.Thread(target=self._help, name="dmp-appender", daemon=True)
                self._helper.start()
                atexit.register(self._send_counts_at_exit)

    def _help(self) -> None:
        while True:
            time.sleep(self.COUNT_SECONDS)
            now = time.monotonic()
            for channel in list(self._channels):
                if channel.unread and now - channel.sent > self.STALE_SECONDS:
                    if channel.lock.acquire(blocking=False):
                        try:
                            self._read_quiet(channel, now)
                        finally:
                            channel.lock.release()
            try:
                self._send_counts()
            except redis.RedisError:
                pass  # kept for the next second

    def _read_quiet(self, channel: _Channel, now: float) -> None:
        """Read the answers a quiet thread left; spool its hits if Redis stopped answering."""
        try:
            self._read_answers(channel, wait=False)
            if channel.unread and now - channel.sent > self.TIMEOUT_SECONDS:
                raise redis.TimeoutError(f"no answer in {self.TIMEOUT_SECONDS:g} s")
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            try:
                self._fail(channel, exc, [])
            except redis.RedisError:
                pass  # no spool: counted in self.lost

    def _send_counts_at_exit(self) -> None:
        try:
            self._send_counts()
        except redis.RedisError:
            log.warning("metric counts of this process lost at exit: Redis unavailable")

    def _send_counts(self) -> None:
        """Send the summed counters (kept for later if Redis is away)."""
        with self._lock:
            counts, self._counts = self._counts, Counter()
        if not counts:
            return
        try:
            with self._r.pipeline(transaction=False) as pipe:
                for field, amount in counts.items():
                    pipe.hincrby(keyspace.METRICS, field, amount)
                pipe.execute()
        except redis.RedisError:
            with self._lock:
                self._counts.update(counts)
            raise


class _Channel:
    """One thread's connection and the hits it sent whose answers are not read yet."""

    __slots__ = ("conn", "lock", "unread", "sent")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.unread: deque[str] = deque()
        self.sent = 0.0  # monotonic time of the last send
