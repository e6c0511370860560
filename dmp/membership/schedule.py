"""The worker's segment schedule: a run every minute, the live lane beside it.

Every ``segments_every`` seconds, and when the API asks for one, a run
(:mod:`dmp.membership.runs`: incremental matrix build, every segment for everyone, snapshot,
changes, lookup sets), in a process of its own at a lower CPU priority
(:mod:`dmp.membership.runprocess`): windows close and scores decay as time passes. On a
thread of its own, every ``segments_latency`` seconds, new event-log files and persons
changed outside the log (imports, stage records) go through the live lane
(:mod:`dmp.membership.live`): only their persons are evaluated and their lookup sets moved,
so a qualifying visit reaches the lookup within a flush, a look and a live tick, also
while a run is under way.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from dmp.config import Config
from dmp.ingest.eventlog import COLUMNS
from dmp.ingest.livefeed import LiveFeed, Unflushed
from dmp.ingest.logindex import LogIndex
from dmp.matrix import sources
from dmp.membership import lookupsets, results
from dmp.membership.live import live_tick
from dmp.membership.runprocess import RunProcess
from dmp.storage import keyspace, locks
from dmp.storage.outage import Outage

log = logging.getLogger(__name__)

# Redis gone or hung past the socket timeout: an outage (one line), not a failing run. Any
# other Redis error (a read-only replica, MISCONF) is a failing run: logged, retried.
_AWAY = (redis.ConnectionError, redis.TimeoutError)


def run_schedule(r: redis.Redis, config: Config, stop: threading.Event) -> None:
    """Run segments for everyone at once, then on the schedule until ``stop`` is set,
    each in the child process the runs go to (:mod:`dmp.membership.runprocess`)."""
    outage = Outage(log, "Redis (segment runs)")
    child = RunProcess(config)  # runs apart from the ingest and the live lane
    try:
        _run_on_schedule(r, config, stop, child, outage)
    finally:
        child.close()


def _run_on_schedule(
    r: redis.Redis, config: Config, stop: threading.Event, child: RunProcess, outage: Outage
) -> None:
    # None until the first run: the monotonic clock counts from boot, so a start value
    # of 0 would hold the first run back on a machine up for less than segments_every.
    last_run: float | None = None
    pause = max(0.05, config.segments_latency)
    while not stop.wait(pause):
        try:
            asked = r.getdel(keyspace.SEGMENTS_RUN_REQUESTED)  # POST /api/v1/segments/runs
        except redis.RedisError as exc:  # away, hung past the socket timeout, or refusing
            outage.down(exc)
            stop.wait(2.0)
            continue
        due = last_run is None or time.monotonic() - last_run >= config.segments_every
        if not asked and not due:
            continue
        try:
            child.run()
            outage.up()
        except locks.Busy:
            if asked:  # keep the API's request for when the lock is free
                _ask_again(r, asked, outage)
            continue  # someone runs `dmp segments run` or builds the matrix
        except _AWAY as exc:
            outage.down(exc)  # one line per outage, not a traceback every 2 s
            stop.wait(2.0)
            continue
        except Exception:  # a bad run must not stop the schedule (or the ingest beside it)
            log.exception("segment run failed; the next in %g s", config.segments_every)
        last_run = time.monotonic()


# s: the live lane's ticks start at least this far apart. The worker hands rows over after
# every batch, hundreds of times a second under a pixel's load, and a tick for each (a
# lock, the log listed, the log index and the segments read every time) cost its process
# about 15 µs a hit: rows handed over meanwhile wait for the next tick, together.
TICK_GAP = 0.1


def run_live_lane(
    r: redis.Redis,
    config: Config,
    stop: threading.Event,
    feed: LiveFeed | None = None,
) -> None:
    """Tick the live lane until ``stop`` is set, beside the runs (not waiting for them):
    when ``feed`` (the ingest worker's, in the same process) hands over rows not flushed
    yet or says a flush landed (at once, or TICK_GAP after the last tick started), and
    every ``segments_latency`` seconds (files from other processes, marks, retries)."""
    pause = max(0.05, config.segments_latency)
    woken = feed.woken if feed is not None else threading.Event()
    seen: set[str] | None = None  # event files whose persons the live lane has evaluated
    index = LogIndex(config.events_dir)  # which files hold whose events (all of the log)
    unflushed = Unflushed()  # rows the feed handed over, until their flush lands
    handled: set[str] = set()  # marks evaluated (until a run's build consumes them)
    ahead: set[str] = set()  # persons with touchpoints stamped after the last tick
    fed: set[str] = set()  # persons of rows handed over, not evaluated yet
    covered: set[str] = set()  # files of the feed's flushes: their rows were handed over
    person = COLUMNS.index("person_id")
    outage, failing = Outage(log, "Redis (live lane)"), Outage(log, "the live lane")
    ticked = float("-inf")  # when the last tick started (monotonic s)
    while not stop.is_set():
        woken.wait(pause)
        while (left := ticked + TICK_GAP - time.monotonic()) > 0 and not stop.wait(left):
            pass
        woken.clear()
        if stop.is_set():
            break
        ticked = time.monotonic()
        if feed is not None:
            handed, flushed = unflushed.take(*feed.drain())
            fed |= {row[person] for row in handed if row[person]}
            covered |= flushed
        try:
            if seen is None:  # go on from the last run's files
                last = results.latest_run(config)
                if last is None:
                    continue  # no run yet: the live lane starts from one
                seen = set(last["matrix"]["files"])
            seen |= covered  # their persons are evaluated from the rows handed over
            covered = set()
            files = set(sources.event_files(config.events_dir))
            current = r.smembers(keyspace.MATRIX_TOUCHED)
            handled &= current
            marks = current - handled
            due = files - seen or marks or ahead or fed
            if due and not r.exists(keyspace.SEGMENTS):
                # No segment to evaluate: what a tick would come to, without its lock, the
                # log index or the rows' table (a fresh server's pixel hits pay for none).
                seen, handled, ahead, fed = files, handled | marks, set(), set()
            elif due:
                with lookupsets.sets_lock(r, 5):  # compaction swaps files under it
                    files = set(sources.event_files(config.events_dir))
                    index.update(files)
                    new = sorted(files - seen)
                    persons = marks | ahead | fed
                    rows = unflushed.table()
                    done = live_tick(r, config, new, persons, index=index, unflushed=rows)
                seen = files  # names are never reused: those gone need no keeping
                handled |= marks
                ahead, fed = set(done.ahead), set()
            outage.up()
            failing.up()
        except locks.Busy:
            continue
        except _AWAY as exc:
            outage.down(exc)
            stop.wait(2.0)
        except Exception as exc:  # the live lane failing must not stop runs
            if failing.down(exc):  # the first failure of a streak with its traceback
                log.exception("live segment tick failed; retried every %g s", pause * 10)
            stop.wait(pause * 10)


def _ask_again(r: redis.Redis, asked: str, outage: Outage) -> None:
    """Put the API's request for a run back (it is retried once Redis answers)."""
    try:
        r.set(keyspace.SEGMENTS_RUN_REQUESTED, asked)
    except redis.RedisError as exc:
        outage.down(exc)  # the request is lost with Redis: the schedule's next run covers it


class Schedule:
    """The schedule's two threads: runs for everyone, and the live lane beside them."""

    def __init__(self, threads: list[threading.Thread]) -> None:
        self.threads = threads

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self.threads:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(left)

    def is_alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)


def start_schedule(
    r: redis.Redis,
    config: Config,
    stop: threading.Event,
    feed: LiveFeed | None = None,
) -> Schedule:
    """Start the runs and the live lane on threads of their own (none if
    ``segments_every`` ≤ 0); ``feed`` hands the lane the ingest's rows before their flush."""
    if config.segments_every <= 0:
        return Schedule([])
    threads = [
        threading.Thread(
            target=run_schedule, args=(r, config, stop), name="dmp-segments", daemon=True
        ),
        threading.Thread(
            target=run_live_lane,
            args=(r, config, stop, feed),
            name="dmp-segments-live",
            daemon=True,
        ),
    ]
    for thread in threads:
        thread.start()
    return Schedule(threads)
