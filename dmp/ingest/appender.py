"""The collectors' way onto the stream: hits sent without waiting, kept until answered.

A synchronous round trip to Redis costs a pixel hit about as much as all the rest of its
work, and so does an XADD sent alone: under load each wakes Redis for itself (a read, a
write and an event-loop round: 33 µs of Redis's CPU a hit, against 4–6 µs for the XADD)
and costs the web process a ``send`` of its own. So request threads put their hits in the
process's outbox and return; one sender thread takes what gathered there every
``send_every`` seconds (``DMP_COLLECT_SEND_MS``: 2 ms) and sends it as one write, on a
connection of its own (made outside the pool, so a failed one never holds a pool slot),
without reading the answers: they are read back in bunches, once they are there. A
stalled Redis slows the sender down, and a full outbox the request threads, instead of
growing a backlog without bound. Until its answer is read a hit is kept (in the outbox,
then as sent): if the connection fails, Redis refuses the write or stays silent, the hit
goes to the process's :class:`~dmp.ingest.spool.Spool` instead (replayed with its event
id, so one that did reach Redis is dropped by the worker's dedup), and so does every hit
that arrives while the spool holds anything. Closing (at exit, also gunicorn's) sends or
spools what the outbox holds; a process killed outright loses its last ``send_every``.
Metric counters are summed here and sent by a helper thread about once a second; the
same thread reads answers a quiet sender left unread.

Without a spool, and with ``send_every`` 0, each request thread sends its own hits
(without a spool an error then reaches the request). On a Redis Cluster the sender (or a
thread sending its own) keeps a connection to each node serving a partition's stream and
sends each node its share of what it took as one write. A node that answers
MOVED or ASK (its slot went elsewhere) did not take the hit: it is spooled like any
refusal, the spool's replay finds the new node, and the helper thread relearns the slot
map for the hits to come. So is a hit whose partition's slot no node is known to serve
(the map being relearnt): spooled, not lost.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from time import monotonic as _now
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException
from redis.retry import Retry

from dmp.ingest.spool import Spool
from dmp.ingest.stream import enqueue, partition_of, xadd_args
from dmp.records import Hit
from dmp.storage import keyspace, lifetime, recenthits
from dmp.storage.bulk import Bulk
from dmp.storage.clusterbulk import is_redirect
from dmp.storage.outage import Outage

log = logging.getLogger(__name__)


class Appender:
    """Puts the collectors' hits on the stream (or in the spool); see the module's text."""

    READ_EVERY = 64  # unread answers that make the sender look for them
    MAX_UNREAD = 10_000  # unread answers that make the sender wait for them (and hits
    # waiting in the outbox that make a request thread wait for room)
    COUNT_SECONDS = 1.0
    WATCH_SECONDS = 0.25  # how often the helper thread looks at every thread's channel
    STALE_SECONDS = 0.5  # answers left unread this long are read by the helper thread ...
    TIMEOUT_SECONDS = 5.0  # ... and Redis not answering for this long counts as gone
    BUG_LOG_SECONDS = 60.0  # a bug's traceback is logged once in this long
    UNCHECKED_SHARE = 0.25  # of the spool that hits with an unchecked write key may fill

    def __init__(
        self,
        r: redis.Redis,
        spool: Spool | None = None,
        partitions: int = 1,
        send_every: float = 0.002,
    ) -> None:
        self._r = r
        # s the sender lets hits gather (DMP_COLLECT_SEND_MS; 0: no outbox), at most 0.1
        self.send_every = max(0.0, min(send_every, 0.1))
        self.partitions = partitions  # DMP_STREAM_PARTITIONS: each hit to its partition
        # On a Redis Cluster each thread has a channel per node serving a partition's
        # stream (see _node_channels); the partitions' slots are looked up once.
        self._cluster = isinstance(r, RedisCluster)
        self._slots = [key_slot(keyspace.partition(p).stream.encode()) for p in range(partitions)]
        self._remap = False  # a node answered MOVED/ASK: the helper relearns the slot map
        if not self._cluster:
            pool = r.connection_pool
            self._connect = lambda: _own_connection(pool, self.TIMEOUT_SECONDS)
        # The helper's counters and pings: a hung Redis must not hold it from its watch.
        self._quick = _quick_client(r)
        self.spool = spool
        self.outage = Outage(log, "Redis (web requests answer 503)")
        self._bug_logged = -self.BUG_LOG_SECONDS
        self._reset()
        lifetime.register(self)

    def after_fork(self) -> None:
        """Start afresh in a forked child: the parent's threads and connections are not ours."""
        self._reset()

    def _reset(self) -> None:
        """Set the state a new object starts with."""
        self._local = threading.local()
        self._channels: list[_Channel] = []  # every thread's, for the helper thread
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._helper: threading.Thread | None = None
        self._stop = threading.Event()
        self._closing_since: float | None = None
        self._outbox: list[tuple[str, int]] = []  # (line, partition) not sent yet
        self._outbox_changed = threading.Condition()  # guards the outbox and _sending
        self._sending = 0  # hits the sender took from the outbox and is sending
        self._sender: threading.Thread | None = None

    def _channel(self) -> _Channel:
        channel = getattr(self._local, "channel", None)
        if channel is None:
            channel = self._local.channel = _Channel(self._connect())
            with self._lock:
                self._channels.append(channel)
        return channel

    def _node_channels(
        self, lines: list[str], targets: list[int]
    ) -> list[tuple[_Channel, list[str], list[int]]]:
        """Return, on a Redis Cluster, this thread's channel to each node serving one of
        ``targets``' partitions, with the lines (and their partitions) it is to send."""
        own: dict[str, _Channel] | None = getattr(self._local, "nodes", None)
        if own is None:
            own = self._local.nodes = {}
        manager = self._r.nodes_manager  # type: ignore[attr-defined]
        nodes = {t: manager.get_node_from_slot(self._slots[t]) for t in set(targets)}
        shares: dict[str, tuple[_Channel, list[str], list[int]]] = {}
        for line, target in zip(lines, targets, strict=True):
            node = nodes[target]
            share = shares.get(node.name)
            if share is None:
                channel = own.get(node.name)
                if channel is None:
                    pool = node.redis_connection.connection_pool
                    conn = _own_connection(pool, self.TIMEOUT_SECONDS)
                    channel = own[node.name] = _Channel(conn)
                    with self._lock:
                        self._channels.append(channel)
                share = shares[node.name] = (channel, [], [])
            share[1].append(line)
            share[2].append(target)
        return list(shares.values())

    def append(self, hits: list[Hit], counters: dict[str, int], *, spool: bool = False) -> None:
        """Send the hits' XADDs (or, with ``spool`` or while the spool holds hits, spool
        them); count ``counters`` (sent within a second). ``spool`` is for hits whose write
        key could not be checked: they may fill only UNCHECKED_SHARE of the spool.

        Raises redis.RedisError only without a spool, when Redis is gone.
        """
        self.count(counters)
        if not hits:
            return
        lines = [hit.to_json() for hit in hits]
        n = self.partitions
        targets = [partition_of(hit, n) for hit in hits] if n > 1 else [0] * len(hits)
        if self.spool is None or spool or self.spool.active or not self.send_every:
            self._send_now(lines, targets, spool)
            return
        with self._outbox_changed:
            while len(self._outbox) >= self.MAX_UNREAD and self._sender_alive():
                self._outbox_changed.wait(self.WATCH_SECONDS)  # room comes as it is sent
            self._outbox += zip(lines, targets, strict=True)
            if not self._sender_alive():
                self._sender = threading.Thread(
                    target=self._send_outbox, name="dmp-appender-send", daemon=True
                )
                self._sender.start()
            self._outbox_changed.notify_all()

    def _sender_alive(self) -> bool:
        return self._sender is not None and self._sender.is_alive()

    def _send_outbox(self) -> None:
        """The sender thread: send what gathered in the outbox, every ``send_every``
        seconds while hits come (the ones of a quiet moment wait that long), until closed."""
        changed = self._outbox_changed
        while True:
            with changed:
                while not self._outbox and not self._stop.is_set():
                    changed.wait()
                if not self._outbox:
                    return  # closed, and everything sent
            time.sleep(self.send_every)
            with changed:
                taken, self._outbox = self._outbox, []
                self._sending = len(taken)
                changed.notify_all()  # room for the request threads
            try:
                self._send_taken(taken)
            except Exception:  # never a hit lost to a bug here: they go to the spool
                log.exception("the appender's sender failed; %d hits spooled", len(taken))
                self._to_spool([t[0] for t in taken])
            finally:
                with changed:
                    self._sending = 0
                    changed.notify_all()

    def flush(self) -> None:
        """Wait until the sender has sent what the outbox holds now (sent here if the
        sender is gone); its answers are read as ever, later."""
        with self._outbox_changed:
            while (self._outbox or self._sending) and self._sender_alive():
                self._outbox_changed.wait(self.WATCH_SECONDS)
            taken, self._outbox = self._outbox, []
        if taken:  # no sender (a bug ended it): this thread sends them
            self._send_taken(taken)

    def _send_taken(self, taken: list[tuple[str, int]]) -> None:
        """Send hits taken from the outbox on this thread's channels."""
        self._send_now([t[0] for t in taken], [t[1] for t in taken], False)

    def _send_now(self, lines: list[str], targets: list[int], spool: bool) -> None:
        """Send lines' XADDs on this thread's channel; on a Redis Cluster, on its channel
        to each node serving one of their partitions (see :meth:`_send`)."""
        if not self._cluster:
            self._send(self._channel(), lines, targets, spool)
            return
        if self.spool is not None and (spool or self.spool.active):
            # As _send would, before any node is looked up (none may be known just now).
            self._to_spool(lines, share=self.UNCHECKED_SHARE if spool else 1.0)
            return
        try:
            shares = self._node_channels(lines, targets)
        except RedisClusterException as exc:  # a slot no node is known to serve (moving)
            self._remap = True  # the helper thread relearns the slot map
            self._start_helper()
            if self.spool is None:
                raise redis.ConnectionError(f"no node known for a partition: {exc}") from exc
            self._to_spool(lines)
            return
        failure = None
        for channel, share, share_targets in shares:
            try:
                self._send(channel, share, share_targets, spool)
            except Exception as exc:  # only without a spool: the other shares still go
                failure = failure or exc
        if failure is not None:
            raise failure

    def _send(self, channel: _Channel, lines: list[str], targets: list[int], spool: bool) -> None:
        """Send lines' XADDs on one channel (or spool them; see :meth:`append`)."""
        with channel.lock:
            if self.spool is not None and (spool or self.spool.active):
                self._to_spool(lines, share=self.UNCHECKED_SHARE if spool else 1.0)
                return
            sent = False
            try:
                bulk = Bulk()
                for line, target in zip(lines, targets, strict=True):
                    bulk.add(*xadd_args(line, target))
                # Inline, not channel.blocking(): a context manager costs a hit ~1 µs.
                if not channel.unread:
                    channel.waiting = now = _now()
                else:
                    now = _now()
                channel.blocked_since = now
                try:
                    channel.conn.send_packed_command([bulk.packed()], check_health=False)
                finally:
                    channel.blocked_since = 0.0
                sent = True
                channel.unread.extend(lines)
                channel.sent = now
                if len(channel.unread) >= self.READ_EVERY:
                    wait = len(channel.unread) > self.MAX_UNREAD
                    self._read_answers(channel, wait=wait)
            except Exception as exc:  # lost, refused handshake, … or a bug: the connection
                # starts afresh and every hit it left unanswered is spooled (the other
                # nodes' shares are still sent)
                if not isinstance(exc, redis.RedisError | OSError):
                    self._log_bug(f"sending {len(lines)} hits")
                self._fail(channel, exc, [] if sent else lines)

    def append_atomic(self, hits: list[Hit], counters: dict[str, int]) -> bool:
        """Put hits on the stream all together, waiting for Redis, or spool them all.

        Return False if neither Redis nor the spool (full, or none) took them. While the
        spool holds hits, these go there too, in order, without trying Redis.
        """
        if self.spool is None or not self.spool.active:
            try:
                enqueue(
                    self._r,
                    hits,
                    counters,
                    atomic=True,
                    also=recenthits.commands(counters),
                    partitions=self.partitions,
                )
                return True
            except redis.RedisError:
                if self.spool is None:
                    return False
        self.count(counters)
        return self.spool.append([hit.to_json() for hit in hits])

    def count(self, counters: dict[str, int]) -> None:
        """Add to metric counters; they reach Redis within about a second."""
        if counters:
            with self._lock:
                self._counts.update(counters)
            self._start_helper()

    def note_outage(self, exc: BaseException) -> None:
        """Log that a request found Redis away (once per outage; its end is logged too)."""
        self.outage.down(exc)
        self._start_helper()  # it looks for Redis every second until it is back

    def sync(self) -> None:
        """Send the counter sums and wait until Redis answered all this process sent
        (or spool what it did not answer)."""
        self.flush()
        for channel in list(self._channels):
            with channel.lock:
                try:
                    while channel.unread:
                        self._read_answers(channel, wait=True)
                except (redis.RedisError, OSError) as exc:
                    self._fail(channel, exc, [])
        self._send_counts()

    def close(self) -> None:
        """Send what is due (spooling what Redis does not answer), stop the helper thread
        (it unblocks a sync stuck on a hung Redis until then), and close the spool."""
        self._closing_since = _now()  # past TIMEOUT_SECONDS every blocked wait is cut
        try:
            self.sync()
        except redis.RedisError:
            pass  # the counts are lost; the hits are spooled
        self._stop.set()
        with self._outbox_changed:
            self._outbox_changed.notify_all()  # the sender, waiting for hits, ends
        if self.spool is not None:
            self.spool.close()
        lifetime.unregister(self)

    def _read_answers(self, channel: _Channel, *, wait: bool) -> None:
        """Read the answers that are there (with ``wait``, all of them); the caller holds
        the channel's lock. A refused hit goes to the spool."""
        conn = channel.conn
        while channel.unread and (wait or conn.can_read(timeout=0)):
            try:
                if wait:
                    with channel.blocking():
                        conn.read_response(disable_decoding=True)
                else:
                    conn.read_response(disable_decoding=True)
                channel.waiting = _now()
            except redis.ResponseError as exc:  # OOM, MISCONF (disk), READONLY replica …
                line = channel.unread[0]  # taken off once spooled
                if is_redirect(exc):
                    # A cluster's slot moved (MOVED, ASK) or is moving: Redis did not
                    # take the hit. It is spooled like any refusal (the spool replays it
                    # to the right node) and the helper relearns the slot map.
                    self._remap = True
                if self.spool is None:
                    log.error("Redis refused a pixel hit: %s", exc)
                else:
                    self._to_spool([line])
                channel.unread.popleft()
                continue
            except (redis.RedisError, OSError):
                raise
            except Exception as exc:
                # A bug while reading: redis-py drops the connection when a read fails, so
                # which answer belongs to which hit is lost. As with a lost connection, the
                # caller spools every hit still unanswered (the spool's replay stores each
                # once) instead of matching later answers to the wrong hits.
                self._log_bug(f"reading answers for {len(channel.unread)} hits")
                raise redis.ConnectionError(f"reading Redis's answers failed: {exc!r}") from exc
            channel.unread.popleft()

    def _fail(self, channel: _Channel, exc: BaseException, lines: list[str]) -> None:
        """Spool what the failed connection held unanswered, and ``lines``."""
        channel.conn.disconnect()  # the next send connects again
        held = [*channel.unread, *lines]
        channel.unread.clear()
        if self.spool is None:
            raise exc
        self._to_spool(held)

    def _to_spool(self, lines: list[str], share: float = 1.0) -> None:
        assert self.spool is not None
        for line in lines:  # each on its own: what fits a filling spool is kept
            self.spool.append([line], share=share)  # a full spool counts what it drops

    def _log_bug(self, what: str) -> None:
        """Log the exception being handled (a bug in the appender), once a minute at most;
        the hits it concerns are spooled (lost without a spool)."""
        now = _now()
        if now - self._bug_logged >= self.BUG_LOG_SECONDS:
            self._bug_logged = now
            log.exception("the appender failed %s", what)

    # -- the helper thread: counters, answers a quiet thread left, the end of an outage --

    def _start_helper(self) -> None:
        if self._helper is not None:
            return
        with self._lock:
            if self._helper is None and not self._stop.is_set():
                self._helper = threading.Thread(target=self._help, name="dmp-appender", daemon=True)
                self._helper.start()

    def _help(self) -> None:
        failing = Outage(log, "the appender's helper thread")
        next_count = 0.0
        while not self._stop.wait(self.WATCH_SECONDS):
            try:
                self._watch_channels()
                if self._remap:
                    self._remap = False
                    self._r.nodes_manager.initialize()  # type: ignore[attr-defined]
                if _now() < next_count:
                    continue
                next_count = _now() + self.COUNT_SECONDS
                if self.outage.is_down:
                    self._quick.ping()
                    self.outage.up()
                self._send_counts()
                failing.up()
            except redis.RedisError:
                pass  # counts kept for the next second; the outage is logged once
            except Exception as exc:  # a bug must not end counting and reading answers
                if failing.down(exc):
                    log.exception("appender helper failed; it goes on")

    def _watch_channels(self) -> None:
        """Read what quiet threads left unread, free threads stuck on a Redis that answers
        nothing, and let go of the channels of threads that ended."""
        now = _now()
        closing = (
            self._closing_since is not None and now - self._closing_since > self.TIMEOUT_SECONDS
        )
        for channel in list(self._channels):
            if channel.lock.acquire(blocking=False):
                try:
                    if channel.unread and now - channel.sent > self.STALE_SECONDS:
                        self._read_quiet(channel, now)
                    if not channel.thread.is_alive() and not channel.unread:
                        channel.conn.disconnect()
                        with self._lock:
                            self._channels.remove(channel)
                finally:
                    channel.lock.release()
                continue
            since = channel.blocked_since
            if since and (now - since > self.TIMEOUT_SECONDS or closing):
                # Its thread waits on a Redis that neither reads nor answers: shut the
                # socket down under it, and the thread spools its hits.
                sock = getattr(channel.conn, "_sock", None)  # redis-py's (tested: 8.x)
                if sock is not None and channel.blocked_since == since:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass  # closed meanwhile

    def _read_quiet(self, channel: _Channel, now: float) -> None:
        """Read the answers a quiet thread left; spool its hits if Redis stopped answering."""
        try:
            self._read_answers(channel, wait=False)
            if channel.unread and now - channel.waiting > self.TIMEOUT_SECONDS:
                raise redis.TimeoutError(f"no answer in {self.TIMEOUT_SECONDS:g} s")
        except Exception as exc:  # a bug too (reading answers, or looking for them)
            if not isinstance(exc, redis.RedisError | OSError):
                self._log_bug(f"reading answers for {len(channel.unread)} hits")
            try:
                self._fail(channel, exc, [])
            except Exception:
                pass  # no spool: the hits are lost (logged when the outage began)

    def _send_counts(self) -> None:
        """Send the summed counters, and their refusals to the minute's recent hits (all
        kept for later if Redis is away)."""
        with self._lock:
            counts, self._counts = self._counts, Counter()
        if not counts:
            return
        try:
            with self._quick.pipeline(transaction=False) as pipe:
                for field, amount in counts.items():
                    pipe.hincrby(keyspace.METRICS, field, amount)
                recenthits.queue_counts(pipe.execute_command, recenthits.from_counters(counts))
                pipe.execute()
        except redis.RedisError:
            with self._lock:
                self._counts.update(counts)
            raise


def _own_connection(pool: redis.ConnectionPool, connect_timeout: float) -> Any:
    """Return a new connection like ``pool``'s, made outside it.

    No retries (a failure spools at once), and a blocking socket: a socket timeout makes
    every send poll first (+20 µs a hit). A hung Redis is noticed by the helper thread
    instead, which shuts the socket of a thread stuck on it down, so that its hits are
    spooled.
    """
    kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
    kwargs["socket_timeout"] = None
    kwargs["socket_connect_timeout"] = connect_timeout
    return pool.connection_class(**kwargs)


def _quick_client(r: redis.Redis) -> redis.Redis:
    """Return a client like ``r`` (a Redis Cluster's too) that gives up after a second."""
    quick = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0}
    if isinstance(r, RedisCluster):
        nodes = [ClusterNode(n.host, n.port) for n in r.get_primaries()]
        return RedisCluster(startup_nodes=nodes, **{**r.nodes_manager.connection_kwargs, **quick})
    pool = r.connection_pool
    kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0), **quick}
    return redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    )


class _Channel:
    """One thread's connection and the hits it sent whose answers are not read yet."""

    __slots__ = ("conn", "lock", "unread", "sent", "waiting", "blocked_since", "thread")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.lock = threading.Lock()
        self.unread: deque[str] = deque()
        self.sent = 0.0  # monotonic time of the last send
        self.waiting = 0.0  # ... and of the last answer read (or first send after none)
        self.blocked_since = 0.0  # a send or a waiting read under way since (0: none)
        self.thread = threading.current_thread()

    @contextmanager
    def blocking(self) -> Iterator[None]:
        """Mark a send or read that blocks while Redis neither reads nor answers."""
        if not self.unread:
            self.waiting = _now()
        self.blocked_since = _now()
        try:
            yield
        finally:
            self.blocked_since = 0.0
