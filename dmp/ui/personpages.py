"""The persons pages: find a person by any identifier, list the persons behind a number
(tier, stage, interest, segment, channel), and show one person whole."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from flask import Response, redirect, render_template, request, url_for
from flask_babel import gettext as _

from dmp.matrix.roster import Roster, latest_roster, member_mask, roster_page
from dmp.membership.results import latest_run
from dmp.people.profiles import follow
from dmp.people.search import MAX_QUERY, PERSON_ID, search_persons
from dmp.storage import keyspace
from dmp.ui.labels import label
from dmp.ui.pages import page_blueprint
from dmp.ui.personfilters import BadFilter, ListQuery, read_list_query, segment_members
from dmp.ui.personview import MAX_SHOWN, TIMELINE_PAGE, person_view, timeline_page
from dmp.web.deps import current_deps

bp = page_blueprint("person_pages", __name__, "/persons")
PAGE_SIZE = 50
Page = str | tuple[str, int] | Response


@bp.context_processor
def _labels() -> dict[str, Any]:
    return {"label": label}


@bp.get("/")
def index() -> Page:
    """Find a person (?q=), or list the persons behind a number (?tier= &stage= …)."""
    if "q" in request.args:
        return _search(request.args.get("q", ""))
    try:
        query = read_list_query(request.args)
    except BadFilter as bad:
        return render_template("ui/persons/index.html", error=str(bad), q=""), 400
    return _list(query)


def _search(text: str) -> Page:
    """Go to the one person a text identifies; else say that none (or which) did."""
    if len(text) > MAX_QUERY:
        error = _("A search may be at most %(n)s characters long.", n=MAX_QUERY)
        return render_template("ui/persons/index.html", error=error, q=text[:MAX_QUERY]), 400
    if not text.strip():
        error = _("Enter an email address, cookie id, CRM id or person id.")
        return render_template("ui/persons/index.html", error=error, q=""), 400
    found = search_persons(current_deps().redis, text)
    if len(found) == 1:
        return redirect(url_for(".person", pid=found[0]), 303)
    return render_template("ui/persons/index.html", q=text, matches=found, searched=True)


def _list(query: ListQuery) -> Page:
    """Show a page of the persons ``query`` filters, highest score first."""
    deps = current_deps()
    roster = latest_roster(deps.config)
    if roster is None:
        return render_template("ui/persons/index.html", query=query, roster=None, q="")
    where = query.where
    if query.segment is not None:
        run = latest_run(deps.config)
        if run is None or query.segment not in run["members"]:
            if not deps.redis.sismember(keyspace.SEGMENTS, query.segment):
                error = _("There is no segment %(sid)s.", sid=query.segment)
                return render_template("ui/persons/index.html", error=error, q=""), 400
            return _listed(query, roster, 0, [], not_run=True)
        load = segment_members(deps.config, run, query.segment)
        mask = member_mask(roster, f"{run['run_id']}:{query.segment}", load)
        where = dataclasses.replace(where, members=mask)
    total, rows = roster_page(roster, where, (query.page - 1) * PAGE_SIZE, PAGE_SIZE)
    return _listed(query, roster, total, rows)


def _listed(
    query: ListQuery, roster: Roster, total: int, rows: list[dict], not_run: bool = False
) -> str:
    pages = max(1, math.ceil(total / PAGE_SIZE))
    name = None
    if query.segment is not None:
        name = current_deps().redis.hget(keyspace.segment(query.segment), "name")
    return render_template(
        "ui/persons/index.html",
        q="",
        query=query,
        roster=roster,
        total=total,
        rows=rows,
        pages=pages,
        not_run=not_run,
        segment_name=name or query.segment,
        first=(query.page - 1) * PAGE_SIZE + 1,
    )


@bp.get("/<pid>")
def person(pid: str) -> Page:
    """Show one person: identifiers, consents, tier, stages, score, interests, segments,
    next content and the timeline (a merged-away id leads to its person)."""
    r = current_deps().redis
    if not PERSON_ID.fullmatch(pid):
        return _missing()
    live = follow(r, pid)
    if live != pid:
        return redirect(url_for(".person", pid=live), 303)
    shown = _whole(request.args.get("shown"), TIMELINE_PAGE)
    if shown is None:
        error = _("The number of touchpoints to show must be a whole number.")
        return render_template("ui/persons/missing.html", error=error), 400
    view = person_view(r, current_deps().config, pid, min(max(shown, 1), MAX_SHOWN))
    if view is None:
        return _missing()
    return render_template("ui/persons/person.html", view=view, more_step=TIMELINE_PAGE)


@bp.get("/<pid>/timeline")
def timeline(pid: str) -> Page:
    """Return the next touchpoints of a person's timeline as table rows (for 'show more')."""
    offset = _whole(request.args.get("offset"), 0)
    if not PERSON_ID.fullmatch(pid) or offset is None or not 0 <= offset < MAX_SHOWN:
        return _("Nothing more to show."), 400
    points, total = timeline_page(current_deps().redis, pid, offset, TIMELINE_PAGE)
    return render_template(
        "ui/persons/_timeline_rows.html",
        pid=pid,
        points=points,
        total=total,
        shown=offset + len(points),
        more_step=TIMELINE_PAGE,
    )


def _missing() -> tuple[str, int]:
    return render_template("ui/persons/missing.html", error=None), 404


def _whole(text: str | None, default: int) -> int | None:
    """Return a query parameter's whole number (``default`` if absent, None if bad)."""
    if text is None:
        return default
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 7 else None
