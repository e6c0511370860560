"""The segment pages: the list with sizes and trends, one segment with its history and
versions, the difference of two versions, and the overlap heat map of the last run.

What each page reads (nothing that grows with the persons per view, but the overlap once
per run): the stored definitions (one pipeline of ``HMGET``), the newest run records (one
``LRANGE``), the Parquet footer of the latest matrix snapshot when a run did not record
its persons, a segment's versions, and the overlap kept per run (:mod:`segmentoverlap`).
The builder (``/ui/segments/builder/``) creates and edits segments.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import pygal
import redis
from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from markupsafe import Markup
from werkzeug.wrappers import Response

from dmp.membership import definitions
from dmp.membership.results import latest_run
from dmp.ui import charts, segmentdiff, segmenthistory, segmentoverlap
from dmp.ui.i18n import day, number
from dmp.ui.pages import page_blueprint
from dmp.ui.segmentformat import PageFormats
from dmp.web.deps import current_deps

bp = page_blueprint("segment_pages", __name__, "/segments")
BUILDER = "/ui/segments/builder/"  # the builder's pages (blueprint segment_builder)
PERSONS = "/ui/persons/"  # the persons list, filtered by ?segment=<id>
_ID = re.compile(r"^[a-z0-9][a-z0-9\-]{0,63}$")
_VERSION = re.compile(r"^[0-9]{1,9}$")


def persons_url(sid: str) -> str:
    """Return the persons list of a segment's members."""
    return f"{PERSONS}?{urlencode({'segment': sid})}"


@bp.get("/")
def index() -> str:
    """Show every segment with its size, trend, share and moves of the last run."""
    r, config = current_deps().redis, current_deps().config
    found, invalid = definitions.load_segments(r)
    runs = segmenthistory.load_runs(r, segmenthistory.TREND_RUNS)
    persons = _persons(runs, config)
    fmt = PageFormats()
    rows = [_row(s.definition.id, s.definition.name, runs, persons, fmt, s) for s in found]
    rows += [_row(bad.id, bad.id, runs, persons, fmt, None, bad.error) for bad in invalid]
    rows.sort(key=lambda x: (x["name"].casefold(), x["id"]))
    return render_template(
        "ui/segments/index.html", rows=rows, runs=runs, persons=persons, builder=BUILDER, fmt=fmt
    )


def _persons(runs: list[dict[str, Any]], config: Any) -> int | None:
    if runs and runs[0].get("persons") is not None:
        return int(runs[0]["persons"])
    return segmenthistory.matrix_persons(config) if runs else None


def _row(
    sid: str,
    name: str,
    runs: list[dict[str, Any]],
    persons: int | None,
    fmt: PageFormats,
    stored: definitions.StoredSegment | None,
    invalid: str | None = None,
) -> dict[str, Any]:
    points = segmenthistory.with_persons(segmenthistory.history(runs, sid), persons)
    last = points[-1] if points else None
    sizes = [p.members for p in points]
    label = _(
        "Members in the last %(n)s runs: from %(first)s to %(last)s",
        n=len(sizes),
        first=fmt.number(sizes[0]) if sizes else "",
        last=fmt.number(sizes[-1]) if sizes else "",
    )
    return {
        "id": sid,
        "name": name,
        "description": stored.definition.description if stored else "",
        "version": stored.version if stored else None,
        "last": last,
        "error": invalid or (last.failed if last else None),
        "trend": segmenthistory.sparkline(sizes, label) if len(sizes) > 1 else Markup(""),
        "persons_url": persons_url(sid),
    }


@bp.get("/<sid>")
def segment(sid: str) -> str:
    """Show one segment: definition, size history, moves per run, versions."""
    r, config = current_deps().redis, current_deps().config
    stored, error, versions = _find(r, sid)
    runs = segmenthistory.load_runs(r, segmenthistory.HISTORY_RUNS)
    points = segmenthistory.with_persons(segmenthistory.history(runs, sid), _persons(runs, config))
    last = points[-1] if points else None
    if error is None and last is not None and last.run_id == runs[0]["run_id"]:
        error = last.failed  # failed in the last run: its members are the run's before
    source = (stored.definition.source if stored else versions[-1].get("definition")) or {}
    name = source.get("name", sid)
    return render_template(
        "ui/segments/segment.html",
        sid=sid,
        stored=stored,
        source={"id": sid, "name": sid, **source},
        error=error,
        yaml=segmentdiff.definition_yaml(source),
        points=list(reversed(points)),
        last=last,
        chart=_chart(points, name),
        versions=list(reversed(versions)),
        persons_url=persons_url(sid),
        builder=BUILDER,
    )


def _find(
    r: redis.Redis, sid: str
) -> tuple[definitions.StoredSegment | None, str | None, list[dict[str, Any]]]:
    """Return the stored segment (or the error of one no longer valid) and its versions;
    abort with the missing page if there is none."""
    if not _ID.match(sid):
        abort(_missing(sid, []))
    versions = definitions.versions(r, sid)
    stored = definitions.get_segment(r, sid)
    if stored is not None:
        return stored, None, versions
    _, invalid = definitions.load_segments(r)
    bad = next((b for b in invalid if b.id == sid), None)
    if bad is None or not versions:
        abort(_missing(sid, versions))
    return None, bad.error, versions


def _missing(sid: str, versions: list[dict[str, Any]]) -> Response:
    sid = sid[:80]  # from the URL: shown, but not at any length
    deleted = versions[-1] if versions and versions[-1].get("deleted") else None
    body = render_template("ui/segments/missing.html", sid=sid, deleted=deleted)
    return Response(body, 404, mimetype="text/html")


def _chart(points: list[segmenthistory.RunPoint], name: str) -> Markup | None:
    if len(points) < 2:
        return None
    chart = charts.make(
        pygal.Line,
        height=240,
        show_legend=False,
        show_minor_x_labels=False,
        x_labels_major_count=6,
        value_formatter=number,
        dots_size=2.5,
    )
    chart.x_labels = [day(p.at) for p in points]
    chart.add(_("Members"), [p.members for p in points])
    return charts.render(chart, _("Members of %(name)s per run", name=name))


@bp.post("/<sid>/delete")
def delete(sid: str) -> Response:
    """Delete a segment (its versions stay; the next run empties it)."""
    r = current_deps().redis
    if not _ID.match(sid) or definitions.delete_segment(r, sid) is None:
        return _missing(sid, definitions.versions(r, sid) if _ID.match(sid) else [])
    flash(_("Segment %(id)s was deleted. The next run empties it; its versions stay.", id=sid))
    return redirect(url_for("segment_pages.index"), 303)


@bp.get("/<sid>/diff")
def diff(sid: str) -> str | tuple[str, int]:
    """Show the difference of two versions of a segment's definition."""
    r = current_deps().redis
    versions = definitions.versions(r, sid) if _ID.match(sid) else []
    if not versions:
        abort(_missing(sid, []))
    numbers = [int(v["version"]) for v in versions]
    older, newer, problem = _pick(numbers)
    by_number = {int(v["version"]): v for v in versions}
    page: dict[str, Any] = {"sid": sid, "versions": list(reversed(versions)), "problem": problem}
    name = next((v["definition"].get("name") for v in reversed(versions) if "definition" in v), sid)
    page |= {"name": name, "older": older, "newer": newer}
    if problem is not None:
        return render_template("ui/segments/diff.html", **page, lines=None), problem[0]
    lines = segmentdiff.diff_lines(
        segmentdiff.version_yaml(by_number[older]), segmentdiff.version_yaml(by_number[newer])
    )
    page |= {"lines": lines, "counts": segmentdiff.counts(lines)}
    page |= {"older_entry": by_number[older], "newer_entry": by_number[newer]}
    return render_template("ui/segments/diff.html", **page)


def _pick(numbers: list[int]) -> tuple[int, int, tuple[int, str] | None]:
    """Return the versions asked for (default: the last two) and a problem, if any."""
    newest = numbers[-1]
    default_older = numbers[-2] if len(numbers) > 1 else newest
    asked = {k: request.args.get(k, "").strip()[:20] for k in ("from", "to")}
    for key, text in asked.items():
        if text and not _VERSION.match(text):
            return default_older, newest, (400, _("%(key)s: expected a version number", key=key))
    older = int(asked["from"]) if asked["from"] else default_older
    newer = int(asked["to"]) if asked["to"] else newest
    for key, value in (("from", older), ("to", newer)):
        if value not in numbers:
            text = _("%(key)s: there is no version %(n)s", key=key, n=value)
            return default_older, newest, (404, text)
    return older, newer, None


@bp.get("/overlap")
def overlap() -> str:
    """Show the overlap heat map of the last run."""
    return render_template("ui/segments/overlap.html", **_overlap_page())


@bp.get("/overlap/table")
def overlap_table() -> str:
    """Return the heat map alone (asked again by the page while the overlap is counted)."""
    return render_template("ui/segments/_overlap.html", **_overlap_page())


def _overlap_page() -> dict[str, Any]:
    r, config = current_deps().redis, current_deps().config
    run = latest_run(config)
    if run is None:
        return {"run": None, "lines": None}
    found = segmentoverlap.overlap_for(config, run)
    if found is None:
        return {"run": run, "lines": None}
    stored, _invalid = definitions.load_segments(r)
    names = {s.definition.id: s.definition.name for s in stored}
    sentence = _("%(n)s of the %(size)s members of %(row)s are also in %(col)s")
    return {"run": run, "lines": segmentoverlap.heat_lines(found, names, sentence)}
