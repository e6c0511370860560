"""An export: one destination's sync of each of its segments, under the destination's lock.

``dmp export run``, the API's run request and the worker's schedule all come here. One
sync of a destination runs at a time (a Redis lease, renewed while it runs; a sync that
stalls past it stops before its next batch). Each segment syncs on its own: one whose
platform is down fails alone, and its plan waits for the next sync.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import redis

from dmp.config import Config
from dmp.storage import keyspace, locks
from exporters import reports, settings
from exporters.destination import Destination, ExportError, Settings
from exporters.registry import kind_of
from exporters.reports import SegmentReport, Status, SyncReport
from exporters.sync import SegmentSync

log = logging.getLogger(__name__)


class UnknownDestination(LookupError):
    """No destination of that name."""


def run(
    r: redis.Redis,
    config: Config,
    name: str,
    *,
    full: bool = False,
    dry_run: bool = False,
    segments: Sequence[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
    wait_seconds: float = 0.0,
) -> SyncReport:
    """Sync one destination (all its segments, or ``segments``); return the report.
    Raises UnknownDestination, and locks.Busy while another sync of it runs."""
    found = settings.load(r, name)
    if found is None:
        raise UnknownDestination(f"no destination {name!r}")
    report = SyncReport(name, found.kind, _now(), full, dry_run)
    chosen = list(segments or found.segments)
    started = time.perf_counter()
    if not dry_run:  # a destination that cannot sync (a secret unset) waits for its time
        r.hset(keyspace.destination(name), "last_sync", report.started)
    try:
        dest: Destination = kind_of(found.kind)(found)
    except ExportError as exc:  # a secret's variable unset: every segment fails, said once
        report.segments = [SegmentReport(s, status=Status.FAILED, error=str(exc)) for s in chosen]
        reports.keep(r, report)
        return report
    if dry_run:
        for segment in chosen:
            part = SegmentSync(r, config, dest, found, segment, None, stop, progress)
            report.segments.append(part.run(full=full, dry_run=True))
    else:
        busy = f"destination {name} is syncing (another sync holds its lock)"
        key = keyspace.destination(name, "lock")
        _release_if_dead(r, key)
        with locks.hold(r, key, wait_seconds, busy, token=_token()) as lease:
            for segment in chosen:
                part = SegmentSync(r, config, dest, found, segment, lease, stop, progress)
                report.segments.append(part.run(full=full, dry_run=False))
    report.seconds = round(time.perf_counter() - started, 3)
    http = getattr(dest, "http", None)  # destinations keep their exporters.http.Http here
    report.retried = getattr(http, "retried", 0)
    reports.keep(r, report)
    return report


# A credentials test answers a person waiting (the CLI, an API request): it is tried
# twice, 10 s each, not with a sync's patience.
TEST_OPTIONS = {"retry_attempts": "2", "retry_base": "0.5", "timeout": "10"}


def prove_credentials(found: Settings) -> str:
    """Make the destination's cheap authenticated call; return what it proved
    (ExportError or OSError say what failed)."""
    quick = replace(found, options={**found.options, **TEST_OPTIONS})
    return kind_of(found.kind)(quick).test()


def due(r: redis.Redis, name: str, every_seconds: int, now_ms: int | None = None) -> bool:
    """Return whether a destination's schedule (or a run asked for) says it syncs now."""
    last, asked = r.hmget(keyspace.destination(name), "last_sync", "requested")
    now = now_ms if now_ms is not None else _now()
    return bool(asked) or last is None or now - int(last) >= every_seconds * 1000


def request(r: redis.Redis, name: str, *, full: bool = False) -> None:
    """Ask the worker to sync a destination at its next look (the API's run request)."""
    r.hset(keyspace.destination(name), mapping={"requested": _now(), "requested_full": int(full)})


def pending(r: redis.Redis, name: str) -> tuple[int | None, bool]:
    """Return when a run was asked for and not yet taken (ms; None: none), and whether a
    sync holds the destination's lock now (the UI's 'requested' and 'running')."""
    with r.pipeline(transaction=False) as pipe:
        pipe.hget(keyspace.destination(name), "requested")
        pipe.exists(keyspace.destination(name, "lock"))
        asked, locked = pipe.execute()
    return (int(asked) if asked else None), bool(locked)


def take_request(r: redis.Redis, name: str) -> bool | None:
    """Return whether a requested run is a full one, clearing the request (None: none)."""
    with r.pipeline(transaction=True) as pipe:
        pipe.hmget(keyspace.destination(name), "requested", "requested_full")
        pipe.hdel(keyspace.destination(name), "requested", "requested_full")
        (asked, full), _ = pipe.execute()
    return None if asked is None else full == "1"


def _token() -> str:
    """Return a lock token naming this host and process (see _release_if_dead)."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(6)}"


def _release_if_dead(r: redis.Redis, key: str) -> None:
    """Free a destination's lock held by a process of this host that is gone (killed
    mid-sync): the restarted sync resumes at once instead of after the lock's expiry."""
    holder = r.get(key)
    if not holder or holder.count("/") != 2:
        return
    host, pid, _ = holder.split("/")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        if locks.release_prefixed(r, key, f"{host}/{pid}/"):
            log.warning("exports: released %s, held by process %s that is gone", key, pid)
    except PermissionError:
        pass  # alive, another user's


def _now() -> int:
    return int(time.time() * 1000)
