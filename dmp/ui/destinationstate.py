"""What the destinations pages show of a destination: its settings, its newest sync
reports and whether a sync is asked for or running; with the words for each state.

Everything here is read from Redis (a destination's settings hash, its capped list of
sync reports, the request field and the lock): a page never runs a sync.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from flask_babel import LazyString, ngettext
from flask_babel import lazy_gettext as _l

from dmp.membership.definitions import list_segments
from dmp.ui.i18n import number
from exporters import export, reports, settings
from exporters.destination import Settings
from exporters.reports import Status

RECENT = 10  # sync reports on a destination's page
STATES: dict[str, LazyString] = {
    Status.OK: _l("ok"),
    Status.PARTIAL: _l("partly"),
    Status.INTERRUPTED: _l("interrupted"),
    Status.FAILED: _l("failed"),
    Status.SKIPPED: _l("skipped"),
    Status.DRY_RUN: _l("dry run"),
    "running": _l("running"),
    "requested": _l("requested"),
    "never": _l("never synced"),
}
TONES = {Status.OK: "good", Status.FAILED: "bad", Status.INTERRUPTED: "bad", Status.PARTIAL: "bad"}
# Why a member of a segment is not sent (dmp.membership.audience.Skip), as a marketer says it.
SKIPS: dict[str, LazyString] = {
    "no_consent": _l("no consent"),
    "refused": _l("consent refused or withdrawn"),
    "unsubscribed": _l("unsubscribed"),
    "bounced": _l("bounced"),
    "no_identifier": _l("no usable email or phone"),
    "gone": _l("erased or merged"),
}


@dataclass(frozen=True, slots=True)
class Overview:
    """A destination with its newest sync report and what is happening to it now."""

    settings: Settings
    runs: tuple[dict[str, Any], ...]  # newest first (exporters.reports.recent)
    requested: int | None  # ms a sync was asked for, not yet taken by the worker
    running: bool

    @property
    def name(self) -> str:
        """Return the destination's name."""
        return self.settings.name

    @property
    def last(self) -> dict[str, Any] | None:
        """Return the newest sync report (None before the first)."""
        return self.runs[0] if self.runs else None

    @property
    def state(self) -> str:
        """Return running, requested, the last sync's status, or never."""
        if self.running:
            return "running"
        if self.requested is not None:
            return "requested"
        return str(self.last["status"]) if self.last else "never"

    @property
    def pending(self) -> bool:
        """Return whether a sync is asked for or running (the page then looks again)."""
        return self.running or self.requested is not None


def read_overview(r: redis.Redis, name: str, recent: int = RECENT) -> Overview | None:
    """Return a destination's overview with its ``recent`` newest reports (None: none)."""
    found = settings.load(r, name)
    if found is None:
        return None
    asked, running = export.pending(r, name)
    return Overview(found, tuple(reports.recent(r, name, recent)), asked, running)


def read_overviews(r: redis.Redis) -> list[Overview]:
    """Return every destination's overview with its newest report, by name."""
    found = (read_overview(r, name, 1) for name in settings.names(r))
    return [o for o in found if o is not None]


def segment_names(r: redis.Redis) -> dict[str, str]:
    """Return every stored segment's name by id."""
    return {s.definition.id: s.definition.name for s in list_segments(r)}


def totals(report: dict[str, Any] | None) -> dict[str, int]:
    """Return a sync report's counts over its segments: added, removed, skipped, failed."""
    out = {"added": 0, "removed": 0, "skipped": 0, "failed": 0}
    for part in (report or {}).get("segments", ()):
        out["added"] += part["added"]
        out["removed"] += part["removed"]
        out["failed"] += part["failed"]
        out["skipped"] += sum(part["skipped"].values())
    return out


def every_text(seconds: int) -> str:
    """Return a schedule as words: 'every 15 minutes', 'every hour', 'every 2 days'."""
    if seconds % 86400 == 0:
        n = seconds // 86400
        return ngettext("every day", "every %(count)s days", n, count=number(n))
    if seconds % 3600 == 0:
        n = seconds // 3600
        return ngettext("every hour", "every %(count)s hours", n, count=number(n))
    if seconds % 60 == 0:
        n = seconds // 60
        return ngettext("every minute", "every %(count)s minutes", n, count=number(n))
    return ngettext("every second", "every %(count)s seconds", seconds, count=number(seconds))


def every_field(seconds: int) -> str:
    """Return a schedule as the form's field takes it: 15m, 1h, 2d, 90s."""
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
