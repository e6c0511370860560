"""The worker's segment schedule: a run every minute, the live lane in between.

Every ``segments_every`` seconds, and when the API asks for one, a run
(:mod:`dmp.segmentrun`: incremental matrix build, every segment for everyone, snapshot,
changes, lookup sets): windows close and scores decay as time passes. In between, every
``segments_latency`` seconds, new event-log files and persons changed outside the log
(imports, stage records) go through the live lane (:mod:`dmp.segmentlive`): only their
persons are evaluated and their lookup sets moved, so a qualifying visit reaches the
lookup within a flush, a look and a live tick.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from dmp import keyspace, matrixstore, segmentrun
from dmp.config import Config
from dmp.segmentlive import live_tick

log = logging.getLogger(__name__)


def run_schedule(r: redis.Redis, config: Config, stop: threading.Event) -> None:
    """Run segments on the schedule until ``stop`` is set (off if ``segments_every`` ≤ 0)."""
    if config.segments_every <= 0:
        return
    last_run, pause = 0.0, max(0.05, config.segments_latency)
    seen: set[str] | None = None  # event files whose persons the live lane has evaluated
    handled: set[str] = set()  # marks the live lane evaluated (a run consumes them)
    ahead: set[str] = set()  # persons with touchpoints stamped after the last tick
    while not stop.wait(pause):
        try:
            asked = r.getdel(keyspace.SEGMENTS_RUN_REQUESTED)  # POST /api/v1/segments/runs
        except redis.ConnectionError:
            asked = None
        if asked or time.monotonic() - last_run >= config.segments_every:
            try:
                files = set(matrixstore.event_files(config.events_dir))
                segmentrun.run(r, config)
                seen, handled = files, set()
            except segmentrun.RunBusy:
                continue  # someone runs `dmp segments run` or builds the matrix
            except redis.ConnectionError:
                log.exception("Redis unavailable; segment runs retry in 2 s")
                stop.wait(2.0)
                continue
            except Exception:  # a bad run must not stop the schedule (or the ingest beside it)
                log.exception("segment run failed; the next in %g s", config.segments_every)
            last_run = time.monotonic()
            continue
        try:
            if seen is None:  # a run this process did not make: go on from it
                last = segmentrun.latest_run(config)
                if last is None:
                    continue  # no run yet: the live lane starts from one
                seen = set(last["matrix"]["files"])
            files = set(matrixstore.event_files(config.events_dir))
            marks = r.smembers(keyspace.MATRIX_TOUCHED) - handled
            if files - seen or marks or ahead:
                with segmentrun.run_lock(r):
                    done = live_tick(r, config, sorted(files - seen), marks | ahead)
                seen |= files
                handled |= marks
                ahead = set(done.ahead)
        except segmentrun.RunBusy:
            continue
        except redis.ConnectionError:
            log.exception("Redis unavailable; the live lane retries in 2 s")
            stop.wait(2.0)
        except Exception:  # the live lane failing must not stop runs
            log.exception("live segment tick failed; retried")
            stop.wait(pause * 10)


def start_schedule(r: redis.Redis, config: Config, stop: threading.Event) -> threading.Thread:
    """Start the schedule on its own thread."""
    thread = threading.Thread(
        target=run_schedule, args=(r, config, stop), name="dmp-segments", daemon=True
    )
    thread.start()
    return thread
