"""The worker's segment schedule: a run as soon as new data is there, and every minute.

New data is a new event-log file, a person changed outside the log (imports, stage
records) or a merge since the last run's matrix; it is looked for every
``segments_latency`` seconds, so a qualifying visit reaches the lookup sets within a
flush, a look and a run. Without new data a run still happens every ``segments_every``
seconds: windows close and scores decay as time passes.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from dmp import keyspace, matrixstore, segmentrun
from dmp.config import Config

log = logging.getLogger(__name__)


def new_data(r: redis.Redis, config: Config) -> bool:
    """Return whether anything a run reads changed since the last run's matrix."""
    last = segmentrun.latest_run(config)
    if last is None:
        return True
    seen = last["matrix"]
    if r.scard(keyspace.MATRIX_TOUCHED):
        return True
    newest = r.xrevrange(keyspace.MERGES, count=1)
    if newest and newest[0][0] != seen["last_merge"]:
        return True
    return set(matrixstore.event_files(config.events_dir)) != set(seen["files"])


def run_schedule(r: redis.Redis, config: Config, stop: threading.Event) -> None:
    """Run segments on the schedule until ``stop`` is set (off if ``segments_every`` ≤ 0)."""
    if config.segments_every <= 0:
        return
    last_run, pause = 0.0, max(0.05, config.segments_latency)
    while not stop.wait(pause):
        try:
            due = time.monotonic() - last_run >= config.segments_every
            if not due and not new_data(r, config):
                continue
            segmentrun.run(r, config)
            last_run = time.monotonic()
        except segmentrun.RunBusy:
            continue  # someone runs `dmp segments run`: theirs will do
        except redis.ConnectionError:
            log.exception("Redis unavailable; segment runs retry in 2 s")
            stop.wait(2.0)
        except Exception:  # a bad run must not stop the schedule (or the ingest beside it)
            log.exception("segment run failed; the schedule goes on")
            last_run = time.monotonic()
            stop.wait(pause * 10)


def start_schedule(r: redis.Redis, config: Config, stop: threading.Event) -> threading.Thread:
    """Start the schedule on its own thread."""
    thread = threading.Thread(
        target=run_schedule, args=(r, config, stop), name="dmp-segments", daemon=True
    )
    thread.start()
    return thread
