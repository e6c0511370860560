"""The ingest worker: the stream's side of stream → dedup → identity → profile → Parquet.

A :class:`Worker` ingests one partition (``keyspace.partition``); one at a time holds its
lease. With one partition (the default) it is the only writer of identities and
profiles; with several, the workers take turns on them (``dmp.ingest.identitylock``), and
a worker process runs one per partition it leased (``dmp.ingest.fleet``).
It reads each pending entry once, then new ones (``dmp.ingest.streamreader``), asking for the
next batch while ``dmp.ingest.batch`` handles this one, and acks entries only in the event
log's flush, which runs on a thread of its own and is retried while the events folder
fails (``dmp.ingest.flushstate``).
"""

from __future__ import annotations

import gc
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import redis

from dmp.config import Config
from dmp.ingest import stream, useragent
from dmp.ingest.batch import Ingest
from dmp.ingest.eventlog import EventBuffer, EventLog, LeaseLost
from dmp.ingest.flushstate import FlushState
from dmp.ingest.identitylock import IdentityLock
from dmp.ingest.livefeed import LiveFeed
from dmp.ingest.streamreader import StreamReader
from dmp.people import merges
from dmp.records import Tier
from dmp.storage import keymigration, keyspace
from dmp.storage.locks import Lease, release_prefixed
from dmp.storage.outage import Outage

log = logging.getLogger(__name__)


class Worker:
    """Moves hits from the ingest stream into profiles and the event log."""

    # A batch costs its round trips to Redis whatever its size: at a trickle of hits the
    # worker would ask for and handle a few at a time, spending the cores the collectors
    # need (the pixel at 0.57x a bare app with the worker on, BENCHMARKS.md). After a
    # small batch it waits this long, so that the next holds what came meanwhile.
    LINGER_SECONDS = 0.05
    LINGER_BELOW = 256  # entries: a batch this small is followed by the wait

    def __init__(
        self,
        r: redis.Redis,
        config: Config,
        partition: int = 0,
        *,
        keys: keyspace.PartitionKeys | None = None,
        token: str = "",
        feed: LiveFeed | None = None,
    ) -> None:
        self.r = r
        self.feed = feed  # the live lane's: each batch's rows before their flush
        self._fed: tuple[EventBuffer | None, int] = (None, 0)  # the buffer, rows handed over
        self.config = config
        self.keys = keys or keyspace.partition(partition)
        self.eventlog = EventLog(r, config.events_dir, config.dedup_days, self.keys)
        self.ingest = Ingest(r, config, self.eventlog)
        self.consumer = config.consumer
        # The lease names this worker instance, not the host: two workers on one host
        # (`dmp serve`'s and a `dmp worker --once`) share the consumer name.
        token = token or f"{lease_prefix(self.consumer, os.getpid())}{secrets.token_hex(6)}"
        self.lease = Lease(r, self.keys.lease, config.lease_seconds, token)
        self.eventlog.fence = (self.keys.lease, token)
        if config.stream_partitions > 1:  # other partitions' workers write identities too
            self.ingest.identity = IdentityLock(r, config.lease_seconds, token)
        self._renewed = float("-inf")  # monotonic time the lease was last taken or renewed
        self._owns_lease = self.keys is not keyspace.LEGACY  # the legacy drain borrows it
        self.reader = StreamReader(r, self.consumer, config.read_count, self.keys.stream)
        self._flusher: ThreadPoolExecutor | None = None
        self._flushing: Future[None] | None = None  # the flush running on the flusher
        self._stop = threading.Event()  # the running loop's stop (set by its caller)
        self._lost = False  # a flush was abandoned: start over before going on
        self.flush_state = FlushState(r, log)  # failing flushes: logged once, shown in /healthz
        self.redis_outage = Outage(log, "Redis")
        self._retry_flushes = False  # a failed flush is retried (not in ``once`` runs)
        self._halt = threading.Event()  # stops a flush's retries: stopping, or the lease gone

    # -- the loop -------------------------------------------------------------------

    def acquire_lease(self) -> bool:
        """Take or renew the lease; return whether this worker may write.

        Held and renewed within the last third of its time: no round trip (the worker
        loop asks before every batch).
        """
        now = time.monotonic()
        if now - self._renewed < self.config.lease_seconds / 3:
            return True
        held = self.lease.take()
        self._renewed = now if held else float("-inf")
        return held

    def release_lease(self) -> None:
        """Give the lease up (only if this worker holds it)."""
        self._renewed = float("-inf")
        self.ingest.release_identity()
        if self._owns_lease:
            self.lease.release()

    def holds_lease(self) -> bool:
        """Return whether the lease was taken or renewed within its time (no round trip)."""
        return time.monotonic() - self._renewed < self.config.lease_seconds

    def start(self) -> None:
        """Prepare the stream group, finish any flush a crash interrupted, re-read leftovers
        (partition 0 first drains the single stream of earlier versions, if anything is
        left there)."""
        keymigration.ensure_current(self.r)  # an upgrade's renames, before anything is read
        stream.ensure_partition_group(self.r, self.keys)
        if self.keys.index == 0 and legacy_left(self.r):
            legacy = Worker(self.r, self.config, keys=keyspace.LEGACY, token=self.lease.token)
            drained = legacy.run(once=True, stop=self._stop)
            log.info("drained %d entries left on the single stream of old", drained)
            self._renewed = legacy._renewed
        self.eventlog.check_legacy()
        useragent.load_parser()
        self.ingest.reset()
        self.reader.restart()
        self._recover_merges()
        finished, undone = self.eventlog.recover()
        if finished or undone:
            log.info("recovered %d interrupted flushes, undid %d", finished, undone)

    def _recover_merges(self) -> None:
        """Finish a batch of merges a crash cut short, before new ones. With several
        partitions, under the identity lock: a live worker's batch of merges, which it
        makes holding the lock, is then never taken for one cut short; persons it
        changed are dropped from every worker's cache (the epoch)."""
        identity = self.ingest.identity
        if identity is None:
            merges.recover_merges(self.r)
            return
        identity.acquire()
        try:
            if merges.recover_merges(self.r):
                self.r.incr(keyspace.WORKER_EPOCH)
        finally:
            identity.release()

    def run(
        self,
        *,
        once: bool = False,
        stop: threading.Event | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Ingest until ``stop`` is set (or, with ``once``, until nothing is pending)."""
        stop = stop or threading.Event()
        self._halt.clear()
        self._retry_flushes, self._stop = not once, stop
        # The identity cache holds many long-lived objects that the default collector
        # would scan again and again; hits are short-lived and cycle-free.
        gc.set_threshold(50_000, 20, 100)
        done, started = 0, False
        try:
            while not stop.is_set():
                if self._lost:  # start() below resets and re-reads our own pending entries
                    self._lost, started = False, False
                if not self.acquire_lease():
                    if started:
                        # We stalled past the lease and another worker took over: it re-reads
                        # our unacked entries, so ours are dropped, not flushed twice.
                        log.warning(
                            "lost the worker lease; dropping %d buffered entries",
                            self.ingest.buffer.entries,
                        )
                        self._finish_flush()
                        self.ingest.reset()
                        started = False
                    if once and self.r.xlen(self.keys.stream) == 0:
                        return done  # another worker holds the lease and has drained it all
                    stop.wait(0.2 if once else 1.0)
                    continue
                self.redis_outage.up()  # Redis answered: an outage, if any, is over
                if not started:
                    self.start()
                    started = True
                handled = self.step(block_ms=0 if once else 200)
                if not once and 0 < handled < self.LINGER_BELOW:
                    stop.wait(self.LINGER_SECONDS)
                done += handled
                if progress and handled:
                    progress(handled)
                if self._due() or (handled == 0 and self.ingest.buffer.entries):
                    self.flush(wait=False)
                if once and handled == 0 and not self.ingest.buffer.entries:
                    break
            if started:
                self.reader.drop_prefetch()
                try:
                    self.flush()
                except OSError as exc:
                    if once:
                        raise
                    log.warning("stopping with entries not stored (%s); they stay pending", exc)
                self.release_lease()
            return done
        except BaseException:
            # A flush still running must end before anyone (a restart of this worker
            # included) recovers interrupted flushes, or recovery would undo it.
            self._halt.set()
            try:
                self._finish_flush()
            except Exception as exc:
                log.warning("the last flush failed too: %s", exc)
            try:
                self.release_lease()  # a restarted worker need not wait for it to expire
            except redis.RedisError:
                pass
            raise
        finally:
            if self._flusher is not None:
                self._flusher.shutdown()
                self._flusher = None

    def _due(self) -> bool:
        buf = self.ingest.buffer
        return buf.rows >= self.config.flush_events or buf.age() >= self.config.flush_seconds

    def step(self, block_ms: int = 0) -> int:
        """Read and handle one batch; return how many stream entries it held."""
        entries, new = self.reader.read(block_ms)
        buf = self.ingest.buffer
        if entries:
            # Rows of earlier batches: this one's handling sends their profile writes
            # (each batch's go out with the next one's), so the lane finds their persons.
            ready = len(buf.events)
            # New entries: the next batch is asked for as soon as this one's question to
            # Redis is out, so that Redis assembles it while this batch is handled.
            ask_next = (lambda: self.reader.ask_new(block_ms)) if new else None
            self.ingest.handle(entries, ask_next)
        else:
            if self.feed is not None and self._fed != (buf, buf.rows):
                self.ingest.settle()  # idle: the last batch's profile writes go now
            ready = buf.rows
            self.ingest.release_identity()  # idle: another partition's worker may go on
        if self.feed is not None:
            self._hand_over(self.feed, buf, ready)
        return len(entries)

    def _hand_over(self, feed: LiveFeed, buf: EventBuffer, ready: int) -> None:
        """Hand the live lane ``buf``'s rows up to ``ready`` not handed over yet."""
        fed_buffer, fed = self._fed
        start = fed if fed_buffer is buf else 0
        if ready > start:
            buf.number = buf.number or feed.number()
            feed.taken(buf.number, buf.events[start:ready])
            self._fed = (buf, ready)

    def flush(self, *, wait: bool = True) -> None:
        """Write buffered events durably and ack their stream entries.

        Without ``wait`` the files are written and committed on the flush thread while
        the loop goes on (one flush at a time; the next one, or the end of the run,
        waits for it and raises what it raised). Until it is committed its digests
        count as seen, so a replay arriving meanwhile is still a duplicate.
        """
        self._finish_flush()
        if self.ingest.buffer.entries:
            buf = self.ingest.take_buffer()  # its profile writes applied
            if self.feed is not None:  # the rest of its rows: the lane has them all
                self._hand_over(self.feed, buf, buf.rows)
            self.ingest.flushing = buf.digests
            if self._flusher is None:
                self._flusher = ThreadPoolExecutor(1, thread_name_prefix="dmp-flush")
            self._flushing = self._flusher.submit(self._store, buf)
        if wait:
            self._finish_flush()

    def _finish_flush(self) -> None:
        job = self._flushing
        if job is None:
            return
        lease_gone = False
        while not job.done():
            # A flush retrying a failing folder can take long: keep the lease meanwhile.
            if not wait([job], timeout=1.0).done and not self._renew_lease():
                lease_gone = True
                self._halt.set()
        self._flushing = None
        try:
            job.result()
        except (LeaseLost, OSError) as exc:
            if not (isinstance(exc, LeaseLost) or lease_gone):
                raise
            # Its entries stay unacked: the loop starts over from the stream (re-reading
            # its own pending entries should it hold the lease again).
            log.warning("%s", exc)
            self._renewed = float("-inf")
            self._lost = True
        finally:
            self.ingest.flushing = frozenset()
            if lease_gone:
                self._halt.clear()  # set above only to end this flush's retries

    def _renew_lease(self) -> bool:
        """Renew the lease while a flush runs; return False only if another worker has it."""
        try:
            return self.acquire_lease()
        except redis.RedisError:
            return True  # cannot tell: the flush's fenced commit decides

    def _flush_halted(self) -> bool:
        return not self._retry_flushes or self._halt.is_set() or self._stop.is_set()

    def _store(self, buf: EventBuffer) -> None:
        started = time.perf_counter()
        files: list[Path] = []
        try:
            files = self.flush_state.retry(
                lambda: self.eventlog.flush(buf), self.eventlog.root, self._flush_halted
            )
        finally:  # in files now, or to be read again from the stream
            if self.feed is not None and buf.number:
                root = self.eventlog.root
                self.feed.done(buf.number, [str(f.relative_to(root)) for f in files])
        log.info(
            "stored %d events in %d files, acked %d entries (%.0f ms)",
            buf.rows,
            len(files),
            buf.entries,
            (time.perf_counter() - started) * 1000,
        )


def status(r: redis.Redis) -> dict[str, Any]:
    """Return the ingest counters ``dmp status`` prints: sums over the partitions (and
    the single stream of old), and each partition's pending hits and lease holder."""
    parts = stream.used_partitions(r)
    with r.pipeline(transaction=False) as pipe:
        for keys in parts:
            pipe.hgetall(keys.stats)
            pipe.xlen(keys.stream)
            pipe.get(keys.lease)
        pipe.hgetall(keyspace.STATS)  # persons per tier
        *answers, persons = pipe.execute()
    stats: dict[str, int] = {k: int(v) for k, v in persons.items()}
    partitions = []
    for i, keys in enumerate(parts):
        found, pending, holder = answers[3 * i : 3 * i + 3]
        for name, value in found.items():
            stats[name] = stats.get(name, 0) + int(value)
        if keys.index >= 0:
            partitions.append({"partition": keys.index, "pending": pending, "worker": holder})
    return {
        "events_stored": stats.get("events_stored", 0),
        "events_aggregate": stats.get("events_aggregate", 0),
        "persons": {t.value: stats.get(f"persons:{t.value}", 0) for t in Tier if t.rank > 0},
        "pending": sum(answers[1::3]),
        "partitions": partitions,
    }


def legacy_left(r: redis.Redis) -> bool:
    """Return whether the single stream of earlier versions holds entries or intents."""
    with r.pipeline(transaction=False) as pipe:
        pipe.xlen(keyspace.LEGACY.stream)
        pipe.scard(keyspace.LEGACY.intents)
        return any(pipe.execute())


def running(r: redis.Redis) -> bool:
    """Return whether some ingest worker holds a partition's lease."""
    return any(r.exists(keys.lease) for keys in stream.used_partitions(r)[1:])


def lease_prefix(consumer: str, pid: int) -> str:
    """Return how the lease tokens of worker process ``pid`` (of ``consumer``) begin."""
    return f"{consumer}/{pid}/"


def release_dead_lease(r: redis.Redis, consumer: str, pid: int) -> bool:
    """Free the leases worker process ``pid``, known to be dead, held (a kill -9 leaves
    them for ``lease_seconds``); return whether it held any. No flush of a dead process
    is in flight: its last commit, a MULTI, is in Redis whole or not at all."""
    prefix = lease_prefix(consumer, pid)
    freed = [release_prefixed(r, k.lease, prefix) for k in stream.used_partitions(r)[1:]]
    release_prefixed(r, keyspace.IDENTITY_LOCK, prefix)
    return any(freed)
