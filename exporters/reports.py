"""What a sync did, kept and shown: one report per destination sync, a part per segment.

Reports go to a capped Redis list per destination (``dmp export status``, ``GET
/api/v1/destinations/<name>/runs``), to the log (one line per segment), and to the
counters ``/metrics`` shows: rows sent and failed, retries and syncs per destination.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import redis

from dmp.storage import keyspace, metrics

log = logging.getLogger(__name__)
KEEP_REPORTS = 200  # per destination
MAX_SAMPLES = 5  # error samples and dry-run rows kept per segment


class Status:
    """How a segment's sync (and a destination's) ended."""

    OK = "ok"  # the destination holds what it should
    PARTIAL = "partial"  # done, but the platform refused some rows (retried next sync)
    INTERRUPTED = "interrupted"  # stopped (shutdown, lock lost): resumed at the next sync
    FAILED = "failed"  # the platform is down or refused the request: retried next sync
    SKIPPED = "skipped"  # nothing to sync yet (no segment run, a segment gone)
    DRY_RUN = "dry-run"  # counted and sampled, nothing sent


@dataclass(slots=True)
class SegmentReport:
    """One segment's part of a sync."""

    segment: str
    session: str = ""
    status: str = Status.OK
    members: int = 0  # in the segment run read
    should_hold: int = 0  # rows the destination should hold after this sync
    added: int = 0
    removed: int = 0
    failed: int = 0
    unsubscribed: int = 0  # reported unsubscribed by the platform (consent withdrawn)
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> members
    errors: list[str] = field(default_factory=list)  # samples of refused rows' reasons
    error: str = ""  # why the sync stopped
    run_id: str = ""  # the segment run whose members were read
    seconds: float = 0.0  # how long the segment's sync took
    sample: dict[str, list[list[str]]] = field(default_factory=dict)  # dry run: op -> rows

    def note_error(self, reason: str) -> None:
        """Keep a sample of a refused row's reason."""
        if len(self.errors) < MAX_SAMPLES and reason not in self.errors:
            self.errors.append(reason)


@dataclass(slots=True)
class SyncReport:
    """A destination's sync: every segment, and how long it took."""

    destination: str
    kind: str
    started: int  # ms
    full: bool = False
    dry_run: bool = False
    seconds: float = 0.0
    retried: int = 0
    segments: list[SegmentReport] = field(default_factory=list)

    @property
    def status(self) -> str:
        """Return the worst status of the segments (ok when there are none)."""
        order = [Status.FAILED, Status.INTERRUPTED, Status.PARTIAL, Status.SKIPPED]
        found = {s.status for s in self.segments}
        return next((s for s in order if s in found), Status.DRY_RUN if self.dry_run else "ok")

    def as_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data."""
        out = asdict(replace(self, segments=[]))
        out["status"] = self.status
        out["segments"] = [
            {**asdict(replace(part, skipped=Counter())), "skipped": dict(part.skipped)}
            for part in self.segments
        ]
        return out


def keep(r: redis.Redis, report: SyncReport) -> None:
    """Store a (non-dry-run) report, count it in the metrics, and log it."""
    name = report.destination
    if not report.dry_run:
        pipe = r.pipeline(transaction=True)
        pipe.lpush(keyspace.destination(name, "runs"), json.dumps(report.as_dict()))
        pipe.ltrim(keyspace.destination(name, "runs"), 0, KEEP_REPORTS - 1)
        metrics.incr(
            pipe, metrics.counter("dmp_export_syncs_total", destination=name, status=report.status)
        )
        if report.retried:
            metrics.incr(
                pipe, metrics.counter("dmp_export_retries_total", destination=name), report.retried
            )
        pipe.execute()
    for part in report.segments:
        level = (
            logging.WARNING if part.status in (Status.FAILED, Status.INTERRUPTED) else logging.INFO
        )
        log.log(level, "%s", describe(name, part, report.dry_run))


def count_rows(pipe: Any, name: str, sent: int, failed: int) -> None:
    """Add a batch's rows to the per-destination counters (``pipe`` may be a pipeline)."""
    if sent:
        metrics.incr(
            pipe, metrics.counter("dmp_export_rows_total", destination=name, outcome="sent"), sent
        )
    if failed:
        metrics.incr(
            pipe,
            metrics.counter("dmp_export_rows_total", destination=name, outcome="failed"),
            failed,
        )


def describe(name: str, part: SegmentReport, dry_run: bool = False) -> str:
    """Return one line saying what a segment's sync did."""
    verb = "would add" if dry_run else "added"
    skipped = ", ".join(
        f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(part.skipped.items())
    )
    line = (
        f"export {name}/{part.segment}: {part.status}; {verb} {part.added}, "
        f"{'would remove' if dry_run else 'removed'} {part.removed}, failed {part.failed}; "
        f"holds {part.should_hold} of {part.members} members, {part.seconds:.1f} s"
    )
    if skipped:
        line += f" (skipped: {skipped})"
    if part.unsubscribed:
        line += f"; {part.unsubscribed} unsubscribed there (consent withdrawn)"
    if part.error:
        line += f"; {part.error}"
    elif part.errors:
        line += f"; e.g. {part.errors[0]}"
    return line


def recent(r: redis.Redis, name: str, limit: int = 20) -> list[dict[str, Any]]:
    """Return a destination's newest sync reports, newest first."""
    return [json.loads(x) for x in r.lrange(keyspace.destination(name, "runs"), 0, limit - 1)]


def newest(r: redis.Redis, names: list[str]) -> dict[str, dict[str, Any]]:
    """Return the newest sync report of each of the named destinations that has one (one
    round trip for all)."""
    with r.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.lindex(keyspace.destination(name, "runs"), 0)
        found = pipe.execute()
    return {name: json.loads(raw) for name, raw in zip(names, found, strict=True) if raw}
