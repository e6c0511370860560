"""The overview page: the involvement pyramid, the funnel, touchpoints per day by channel,
the top topics, and the latest segment runs and syncs; every number leads to its persons.

What it reads (nothing that grows with the persons or the event log per view): the
Redis counters of persons per tier and of aggregate-only hits, the funnel the latest
matrix build wrote beside its snapshot, the build's summary (:mod:`dmp.matrix.summary`,
counted once per build), the last run records, and each destination's newest report.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from urllib.parse import urlencode

import redis
from babel.dates import format_skeleton
from flask import render_template
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from markupsafe import Markup

from dmp.ingest.worker import status
from dmp.matrix import snapshots
from dmp.matrix.summary import latest_summary
from dmp.membership import definitions
from dmp.membership.results import run_records
from dmp.records import FUNNEL, Stage, Tier
from dmp.ui import charts
from dmp.ui.i18n import language, number
from dmp.ui.labels import label
from dmp.ui.pages import page_blueprint
from dmp.web.deps import current_deps
from exporters import reports, settings

bp = page_blueprint("overview", __name__)
PERSONS = "/ui/persons/"  # the persons pages' list, filtered by its query parameters
RUNS_SHOWN = 5
SEGMENTS_SHOWN = 10
SYNCS_SHOWN = 10
DESTINATIONS_READ = 100  # newest report of at most this many destinations
STATUSES = {
    reports.Status.OK: _l("OK"),
    reports.Status.PARTIAL: _l("partial"),
    reports.Status.INTERRUPTED: _l("interrupted"),
    reports.Status.FAILED: _l("failed"),
    reports.Status.SKIPPED: _l("skipped"),
    reports.Status.DRY_RUN: _l("dry run"),
}


def persons_url(**query: str) -> str:
    """Return the persons list filtered by ``query`` (tier, stage, interest, segment, channel)."""
    return f"{PERSONS}?{urlencode(query)}" if query else PERSONS


@bp.get("/")
def index() -> str:
    """Show the overview: pyramid, funnel, touchpoints, topics, runs and syncs."""
    deps = current_deps()
    r, config = deps.redis, deps.config
    funnel = snapshots.latest_funnel(config)
    summary = latest_summary(config)
    runs = run_records(r, RUNS_SHOWN)
    return render_template(
        "ui/overview/index.html",
        pyramid=pyramid(status(r)),
        funnel=funnel_rows(funnel) if funnel else None,
        funnel_chart=funnel_chart(funnel) if funnel else None,
        built=funnel["as_of"] if funnel else None,
        summary=summary,
        touch_chart=touch_chart(summary) if summary and summary["touchpoints"] else None,
        runs=runs,
        segments=segment_sizes(r, runs[0]) if runs else [],
        syncs=latest_syncs(r),
        destinations=bool(settings.names(r)),
        persons_url=persons_url,
        statuses=STATUSES,
    )


def pyramid(counts: dict[str, Any]) -> dict[str, Any]:
    """Return the pyramid's rows (highest tier first), its total and its chart."""
    persons = counts["persons"]
    rows = [
        {"tier": t.value, "label": label("tier", t.value), "count": persons.get(t.value, 0)}
        for t in (Tier.HIGH, Tier.MEDIUM, Tier.LOW)
    ]
    unknown = counts["events_aggregate"]
    values = [unknown, *(row["count"] for row in reversed(rows))]
    total = sum(row["count"] for row in rows)
    if not any(values):
        return {"rows": rows, "unknown": unknown, "total": total, "chart": None, "empty": True}
    # The shape only, in steps of half a percent: the counts move with every hit, the
    # drawing (kept by charts.cached) need not; the numbers are in the table beside it.
    widest = max(values)
    shape = tuple(round(200 * v / widest) / 200 for v in values)
    labels = [label("tier", t.value) for t in Tier]
    text = _("Involvement pyramid from unknown to high; the counts are in the table.")
    chart = charts.cached(
        ("pyramid", language(), shape), lambda: charts.pyramid(labels, shape, text)
    )
    return {"rows": rows, "unknown": unknown, "total": total, "chart": chart, "empty": False}


def funnel_rows(funnel: dict[str, Any]) -> list[dict[str, Any]]:
    """Return a row per stage: persons, median days in it, and the conversion onwards."""
    onwards = {step["from"]: step for step in funnel["conversion"]}
    return [
        {
            "stage": row["stage"],
            "label": label("stage", row["stage"]),
            "persons": row["persons"],
            "median_days": row["median_days"],
            "conversion": onwards.get(row["stage"]),
            "next": label("stage", onwards[row["stage"]]["to"]) if row["stage"] in onwards else "",
            "path": Stage(row["stage"]) in FUNNEL,
        }
        for row in funnel["stages"]
    ]


def funnel_chart(funnel: dict[str, Any]) -> Markup | None:
    """Return the funnel's chart: persons who reached each stage on the path, lead first."""
    steps = funnel["conversion"]
    if not funnel["persons"] or not steps:
        return None
    reached = [steps[0]["reached_from"], *(step["reached_to"] for step in steps)]
    labels = [label("stage", s.value) for s in FUNNEL]
    text = _(
        "Funnel, persons who reached each stage: %(values)s", values=_described(labels, reached)
    )
    key = ("funnel", language(), tuple(reached))
    return charts.cached(key, lambda: charts.pyramid(labels, reached, text, top_down=True))


def touch_chart(summary: dict[str, Any]) -> Markup:
    """Return the chart of touchpoints per day, stacked by channel (drawn once per build
    and language)."""
    key = ("touchpoints", language(), summary["snapshot"], summary["as_of"])
    return charts.cached(key, lambda: _draw_touch_chart(summary))


def _draw_touch_chart(summary: dict[str, Any]) -> Markup:
    locale = get_locale()
    days = [format_skeleton("MMMd", date.fromisoformat(d), locale=locale) for d in summary["days"]]
    series = [(c["channel"], c["per_day"]) for c in summary["channels"]]
    totals = _described([c for c, _ in series], [c["touchpoints"] for c in summary["channels"]])
    label = _(
        "Touchpoints per day by channel, last %(n)s days: %(totals)s", n=len(days), totals=totals
    )
    return charts.daily_stack(days, series, label, number)


def segment_sizes(r: redis.Redis, run: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the biggest segments of a run record: id, name and members."""
    found, invalid = definitions.load_segments(r)
    names = {s.definition.id: s.definition.name for s in found}
    sizes = sorted(run.get("members", {}).items(), key=lambda item: (-item[1], item[0]))
    return [
        {"id": sid, "name": names.get(sid, sid), "members": n, "failed": sid in run["failed"]}
        for sid, n in sizes[:SEGMENTS_SHOWN]
    ]


def latest_syncs(r: redis.Redis) -> list[dict[str, Any]]:
    """Return each destination's newest sync report, newest first, with its totals."""
    newest = reports.newest(r, settings.names(r)[:DESTINATIONS_READ])
    rows = [sync_row(report) for report in newest.values()]
    return sorted(rows, key=lambda row: -row["started"])[:SYNCS_SHOWN]


def sync_row(report: dict[str, Any]) -> dict[str, Any]:
    """Return what the overview shows of a sync report: totals over its segments."""
    parts = report.get("segments", [])
    return {
        "destination": report["destination"],
        "kind": report.get("kind", ""),
        "started": report.get("started", 0),
        "seconds": report.get("seconds", 0.0),
        "status": report.get("status", ""),
        "segments": len(parts),
        **{k: sum(p.get(k, 0) for p in parts) for k in ("added", "removed", "failed")},
    }


def _described(labels: Any, values: list[int]) -> str:
    """Return ``label value, …`` for a chart's screen-reader text."""
    return ", ".join(f"{label} {number(v)}" for label, v in zip(labels, values, strict=True))
