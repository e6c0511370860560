"""A worker process's fair share of the ingest partitions (``DMP_STREAM_PARTITIONS`` > 1).

Live worker processes beat into a registry (``keyspace.WORKERS``, scored by their last
beat); each takes at most ceil(partitions / live processes) partitions, those it is
preferred for first (partition p goes to the process of rank p mod live), gives back
the ones past its share when others appear, and takes over any whose lease lapsed (a
dead process's). A leased partition runs on a thread of its own (a :class:`Worker`);
its lease keeps two processes off one partition and fences its flushes.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import threading
import time

import redis

from dmp.config import Config
from dmp.ingest import compaction, stream
from dmp.ingest.identitylock import IdentityLockLost
from dmp.ingest.livefeed import LiveFeed
from dmp.ingest.worker import Worker, lease_prefix
from dmp.storage import keyspace
from dmp.storage.outage import Outage

log = logging.getLogger(__name__)


class Fleet:
    """The partitions one worker process holds, each ingested by a thread."""

    def __init__(self, r: redis.Redis, config: Config, feed: LiveFeed | None = None) -> None:
        self.r, self.config, self.feed = r, config, feed
        self.n = config.stream_partitions
        self.name = f"{lease_prefix(config.consumer, os.getpid())}{secrets.token_hex(4)}"
        self.held: dict[int, tuple[Worker, threading.Event, threading.Thread]] = {}
        self.outage = Outage(log, "Redis")

    def run(self, stop: threading.Event) -> None:
        """Beat, rebalance and ingest until ``stop`` is set; then give every partition back."""
        beat = self.config.lease_seconds / 5
        try:
            while not stop.is_set():
                try:
                    self.rebalance()
                    self.outage.up()
                except redis.RedisError as exc:
                    self.outage.down(exc)
                stop.wait(beat)
        finally:
            for p in list(self.held):
                self._give_back(p)
            try:
                self.r.zrem(keyspace.WORKERS, self.name)
            except redis.RedisError:
                pass

    def share(self) -> tuple[int, int, int]:
        """Beat; return (live processes, this one's rank among them, its share)."""
        now_ms = int(time.time() * 1000)
        with self.r.pipeline(transaction=False) as pipe:
            pipe.zadd(keyspace.WORKERS, {self.name: now_ms})
            pipe.zremrangebyscore(
                keyspace.WORKERS, "-inf", now_ms - self.config.lease_seconds * 1000
            )
            pipe.zrange(keyspace.WORKERS, 0, -1)
            live = sorted(m.decode() if isinstance(m, bytes) else m for m in pipe.execute()[2])
        rank = live.index(self.name) if self.name in live else 0
        return len(live), rank, math.ceil(self.n / max(1, len(live)))

    def rebalance(self) -> None:
        """Drop partitions lost or past the share, then take free ones up to the share."""
        if not self.held:
            stream.ensure_group(self.r, self.n)
        live, rank, share = self.share()
        for p, (worker, _, thread) in list(self.held.items()):
            if not thread.is_alive() or not worker.holds_lease():
                log.warning("partition %d: its lease is gone; giving it up", p)
                self._give_back(p)
        while len(self.held) > share:
            self._give_back(max(self.held))
        order = sorted(range(self.n), key=lambda p: (p % live != rank, p))
        for p in order:
            if len(self.held) >= share:
                break
            if p in self.held:
                continue
            worker = Worker(self.r, self.config, p, feed=self.feed)
            if not worker.acquire_lease():
                continue
            done = threading.Event()
            thread = threading.Thread(
                target=_ingest_partition, args=(worker, done), name=f"dmp-p{p}", daemon=True
            )
            self.held[p] = (worker, done, thread)
            thread.start()
            log.info("partition %d: leased (%d of %d live workers' share %d)", p, rank, live, share)

    def _give_back(self, p: int) -> None:
        """Stop a partition's thread: it flushes what it holds and releases the lease."""
        _, done, thread = self.held.pop(p)
        done.set()
        thread.join(timeout=30)


def _ingest_partition(worker: Worker, stop: threading.Event) -> None:
    """Run one partition's worker until ``stop``, riding out Redis and folder failures."""
    while not stop.is_set():
        try:
            worker.run(stop=stop)
        except IdentityLockLost as exc:  # stalled past the lock: its entries are read again
            log.warning("partition %d: %s; handling its entries again", worker.keys.index, exc)
        except redis.RedisError as exc:
            worker.redis_outage.down(exc)
            stop.wait(0.5)
        except OSError as exc:
            worker.flush_state.failed(exc)
            stop.wait(1.0)
        else:
            return


def run_forever(
    r: redis.Redis,
    config: Config,
    stop: threading.Event,
    feed: LiveFeed | None = None,
) -> None:
    """Run a worker until ``stop`` is set, riding out Redis outages, with the daily
    compaction (``compact_every_hours``) on a thread beside it. ``feed`` hands its
    rows to the live lane before their flush."""
    compactions = compaction.start_schedule(r, config, stop)
    try:
        if config.stream_partitions > 1:
            Fleet(r, config, feed).run(stop)
        else:
            _ingest_forever(r, config, stop, feed)
    finally:
        if compactions is not None:
            # A compaction stops before its swap once ``stop`` is set (nothing changed);
            # one killed in its swap is rolled forward by the next (dmp.ingest.swaps).
            compactions.join(timeout=10)


def _ingest_forever(
    r: redis.Redis, config: Config, stop: threading.Event, feed: LiveFeed | None
) -> None:
    worker = Worker(r, config, feed=feed)
    while not stop.is_set():
        try:
            worker.run(stop=stop)
        except redis.RedisError as exc:  # away, hung past the socket timeout, MISCONF, READONLY
            worker.redis_outage.down(exc)  # one line per outage, not one per retry
            stop.wait(0.5)
        except OSError as exc:  # the events folder refused a recovery: as a failing flush
            worker.flush_state.failed(exc)
            stop.wait(1.0)
        else:
            return
