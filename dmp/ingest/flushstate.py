"""Whether the worker's event-log flushes fail, kept in Redis for /healthz and /metrics.

The worker and the web processes are different processes: the worker records a failing
flush in one small hash (``keyspace.EVENTLOG_FLUSH``) that expires unless renewed, so a
worker that died mid-streak stops reporting it; the first flush that works deletes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis
from redis.backoff import ExponentialBackoff

from dmp.storage import keyspace, metrics
from dmp.storage.outage import Outage
from dmp.storage.parquetfiles import accepts_writes

STATE_TTL = 120  # seconds; retries renew it at least every RETRY_MAX seconds
RETRY_FIRST, RETRY_MAX = 0.5, 30.0  # backoff between flush attempts, doubling
PROBE_EVERY = 0.5  # seconds between cheap checks whether the folder takes writes again
FAILURES_TOTAL = "dmp_eventlog_flush_failures_total"

T = TypeVar("T")


class FlushState:
    """The worker's record of its flushes: one log line per failure streak, state in Redis."""

    def __init__(self, r: redis.Redis, log: logging.Logger) -> None:
        self.r = r
        self._outage = Outage(log, "the event log folder")
        self._stale = True  # a worker before us may have left a failure behind

    def retry(self, attempt: Callable[[], T], folder: Path, halted: Callable[[], bool]) -> T:
        """Return ``attempt()``, retried after each OSError until it works or ``halted()``
        (then the error is raised): 0.5 s doubling up to 30 s, or as soon as ``folder``
        takes a probe file (until a retry so woken fails too: a nearly full disk)."""
        backoff, failures, probe = ExponentialBackoff(RETRY_MAX, RETRY_FIRST), 0, True
        while True:
            try:
                result = attempt()
            except OSError as exc:
                self.failed(exc)
                woke = self._pause(backoff.compute(failures), folder if probe else None, halted)
                if woke is None:
                    raise
                probe, failures = probe and not woke, failures + 1
                continue
            self.succeeded()
            return result

    @staticmethod
    def _pause(delay: float, folder: Path | None, halted: Callable[[], bool]) -> bool | None:
        """Wait ``delay`` s; return True if the folder took a probe first, None if halted."""
        deadline = time.monotonic() + delay
        next_probe = time.monotonic() + PROBE_EVERY
        while (left := deadline - time.monotonic()) > 0:
            if halted():
                return None
            if folder is not None and time.monotonic() >= next_probe:
                if accepts_writes(folder):
                    return True
                next_probe = time.monotonic() + PROBE_EVERY
            time.sleep(min(0.1, left))
        return None if halted() else False

    def failed(self, exc: BaseException) -> None:
        """Note a failed flush: a warning if it starts a streak, and the state in Redis."""
        self._outage.down(exc)
        self._stale = True
        error, since = f"{type(exc).__name__}: {exc}", self._outage.since or time.time()
        try:
            with self.r.pipeline(transaction=True) as pipe:
                pipe.hset(keyspace.EVENTLOG_FLUSH, mapping={"error": error, "since": since})
                pipe.hincrby(keyspace.EVENTLOG_FLUSH, "failures", 1)
                pipe.expire(keyspace.EVENTLOG_FLUSH, STATE_TTL)
                metrics.incr(pipe, FAILURES_TOTAL)
                pipe.execute()
        except redis.RedisError:
            pass  # Redis is away too: the log line stands alone

    def succeeded(self) -> None:
        """Note a flush that worked: an info line if it ends a streak, the state cleared."""
        self._outage.up()
        if self._stale:
            try:
                self.r.delete(keyspace.EVENTLOG_FLUSH)
                self._stale = False
            except redis.RedisError:
                pass  # cleared by the next flush


def read_flush_state(r: redis.Redis) -> dict[str, Any] | None:
    """Return the failing flush's error, since (epoch seconds) and failures, or None."""
    state = r.hgetall(keyspace.EVENTLOG_FLUSH)
    if not state:
        return None
    return {
        "flush_error": state.get("error", ""),
        "since": float(state.get("since") or 0),
        "failures": int(state.get("failures") or 0),
    }
