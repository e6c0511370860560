"""The worker's export schedule: each destination syncs every ``every`` (its own setting),
and at once when the API asks for a run.

A thread beside the ingest worker and the segment schedule (``dmp worker``) looks every
few seconds for destinations that are due. Nothing syncs before the first segment run;
a destination another process is syncing is left to it; a failing sync is reported and
tried again at its next time, its plan kept.
"""

from __future__ import annotations

import logging
import threading

import redis

from dmp.config import Config
from dmp.membership.results import latest_run
from dmp.storage import locks
from dmp.storage.outage import Outage
from exporters import export, settings

log = logging.getLogger(__name__)
LOOK_SECONDS = 5.0


def start_schedule(r: redis.Redis, config: Config, stop: threading.Event) -> threading.Thread:
    """Start the export schedule on a thread of its own; return the thread."""
    thread = threading.Thread(
        target=run_schedule, args=(r, config, stop), name="dmp-exports", daemon=True
    )
    thread.start()
    return thread


def run_schedule(r: redis.Redis, config: Config, stop: threading.Event) -> None:
    """Sync every due destination, looking every few seconds until ``stop`` is set."""
    outage = Outage(log, "Redis (exports)")
    while not stop.wait(LOOK_SECONDS):
        try:
            look(r, config, stop)
            outage.up()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            outage.down(exc)
        except Exception:  # one bad destination must not end the schedule
            log.exception("exports: the schedule's look failed; trying again")


def look(r: redis.Redis, config: Config, stop: threading.Event) -> int:
    """Sync each destination that is due; return how many synced."""
    if latest_run(config) is None:
        return 0
    synced = 0
    for name in settings.names(r):
        found = settings.load(r, name)
        if stop.is_set() or found is None or not export.due(r, name, found.every_seconds):
            continue
        full = bool(export.take_request(r, name))
        try:
            export.run(r, config, name, full=full, stop=stop)
            synced += 1
        except locks.Busy:
            log.info("exports: %s is syncing elsewhere; left to it", name)
    return synced
