"""The destinations pages: where segments go, how their syncs went, and sending them now.

A page reads a destination's settings and its newest sync reports from Redis; "Sync
now" asks the worker for a sync, as the admin API does (``exporters.export.request``),
and the page shows it requested, then running, until the worker's report arrives. A
dry run counts a bounded sample (``dmp.ui.destinationdryrun``); nothing here ever runs a
sync itself.
"""

from __future__ import annotations

import os
import shutil

from flask import Response, abort, make_response, redirect, render_template, request, url_for
from flask_babel import gettext as _

from dmp.storage import exportfiles
from dmp.ui import destinationforms, destinationstate
from dmp.ui.destinationdryrun import dry_run
from dmp.ui.destinationkinds import KINDS, Kind, kind_title
from dmp.ui.destinationstate import Overview, read_overview, read_overviews, segment_names
from dmp.ui.pages import changes_nothing, may_change, page_blueprint
from dmp.web.deps import current_deps
from exporters import export, settings
from exporters.destination import ExportError
from exporters.registry import kind_of

bp = page_blueprint("destination_pages", __name__, "/destinations")
Page = str | tuple[str, int] | Response


@bp.get("/")
def index() -> str:
    """Show every destination with its segments, schedule and last sync."""
    r = current_deps().redis
    return render_template(
        "ui/destinations/index.html",
        rows=read_overviews(r),
        names=segment_names(r),
        removed=request.args.get("removed", "")[:64],
        **_words(),
    )


@bp.get("/<name>")
def detail(name: str) -> str:
    """Show a destination: segments, schedule, options and its last syncs."""
    return _detail(name)


@bp.get("/<name>/status")
def status(name: str) -> Response:
    """Return the sync state partial; once nothing is pending, tell htmx to reload."""
    found = _overview(name, 1)
    response = make_response(render_template("ui/destinations/_status.html", row=found, **_words()))
    if not found.pending and request.headers.get("HX-Request"):
        response.headers["HX-Refresh"] = "true"
    return response


@bp.post("/<name>/sync")
def sync_now(name: str) -> Response:
    """Ask the worker to sync the destination now; show its page (requested)."""
    _overview(name, 0)
    export.request(current_deps().redis, name, full=request.form.get("full") == "1")
    return redirect(url_for("destination_pages.detail", name=name), 303)


@bp.post("/<name>/dry-run")
@changes_nothing
def dry_run_page(name: str) -> Page:
    """Show what a sync would add and remove (counted on a bounded sample; sends nothing)."""
    found = _overview(name, 0)
    chosen = request.form.get("segment", "")
    if chosen and chosen not in found.settings.segments:
        return _detail(name, error=_("Choose one of the destination's segments."), code=400)
    segments = [chosen] if chosen else list(found.settings.segments)
    deps = current_deps()
    trials = dry_run(deps.redis, deps.config, found.settings, segments)
    names = segment_names(deps.redis)
    return render_template(
        "ui/destinations/dryrun.html",
        row=found,
        trials=trials,
        names=names,
        columns=kind_of(found.settings.kind).columns,
        **_words(),
    )


@bp.post("/<name>/test")
def test_credentials(name: str) -> Page:
    """Make the destination's cheap authenticated call and say what it proved."""
    found = _overview(name, 0)
    try:
        said = export.prove_credentials(found.settings)
    except (ExportError, OSError) as exc:
        return _detail(name, error=_("The test failed: %(why)s", why=str(exc)[:500]))
    return _detail(name, notice=_("The test worked: %(what)s", what=said[:500]))


@bp.post("/<name>/remove")
def remove(name: str) -> Response:
    """Remove the destination and what dmp kept of its syncs (the platform keeps its
    audience)."""
    deps = current_deps()
    if not settings.remove(deps.redis, name):
        abort(404)
    shutil.rmtree(exportfiles.exports_dir(deps.config) / name, ignore_errors=True)
    return redirect(url_for("destination_pages.index", removed=name), 303)


@bp.route("/new", methods=["GET", "POST"])
def add() -> Page:
    """Let the user choose a kind, then show its form; store a destination."""
    if not may_change():
        abort(403)
    kind = KINDS.get(request.values.get("kind", ""))
    if kind is None:
        page = render_template("ui/destinations/kinds.html", kinds=KINDS.values())
        return page, 400 if request.method == "POST" else 200
    r = current_deps().redis
    form = destinationforms.make_form(kind, segment_names(r))
    if request.method == "GET":
        return _form_page(form, kind, None)
    name = (form.name.data or "").strip()
    found = destinationforms.read_settings(r, form, kind, name)
    if found is not None and not settings.save(r, found):
        form.name.errors = [_("A destination of this name exists.")]
        found = None
    if found is None:
        return _form_page(form, kind, None, 422)
    return redirect(url_for("destination_pages.detail", name=found.name), 303)


@bp.route("/<name>/edit", methods=["GET", "POST"])
def edit(name: str) -> Page:
    """Show the form of a destination; store its changed settings."""
    if not may_change():
        abort(403)
    stored = _overview(name, 0).settings
    kind = KINDS[stored.kind]
    r = current_deps().redis
    form = destinationforms.make_form(kind, segment_names(r), stored)
    if request.method == "GET":
        return _form_page(form, kind, name)
    found = destinationforms.read_settings(r, form, kind, name)
    if found is None:
        return _form_page(form, kind, name, 422)
    settings.save(r, found, replace=True)
    return redirect(url_for("destination_pages.detail", name=name), 303)


def _form_page(
    form: destinationforms.DestinationForm, kind: Kind, name: str | None, code: int = 200
) -> tuple[str, int]:
    r = current_deps().redis
    page = render_template(
        "ui/destinations/form.html",
        form=form,
        kind=kind,
        name=name,
        names=segment_names(r),
        option_field=destinationforms.option_field,
        target_field=destinationforms.target_field,
    )
    return page, code


def _overview(name: str, recent: int) -> Overview:
    found = read_overview(current_deps().redis, name, recent)
    if found is None:
        abort(404)
    return found


def _detail(name: str, *, error: str = "", notice: str = "", code: int = 200) -> Page:
    r = current_deps().redis
    found = _overview(name, destinationstate.RECENT)
    variables = {
        key: bool(os.environ.get(value))
        for key, value in found.settings.options.items()
        if key.partition(".")[0].endswith("_env")
    }
    page = render_template(
        "ui/destinations/detail.html",
        row=found,
        shown=_chosen(found),
        names=segment_names(r),
        options=settings.shown(found.settings)["options"],
        variables=variables,
        error=error,
        notice=notice,
        **_words(),
    )
    return page, code


def _chosen(found: Overview) -> dict[str, object] | None:
    """Return the sync whose segments the page shows: the one asked for, else the newest."""
    asked = request.args.get("sync", "")[:20]
    return next((run for run in found.runs if str(run["started"]) == asked), found.last)


def _words() -> dict[str, object]:
    return {
        "STATES": destinationstate.STATES,
        "TONES": destinationstate.TONES,
        "SKIPS": destinationstate.SKIPS,
        "every_text": destinationstate.every_text,
        "totals": destinationstate.totals,
        "kind_title": kind_title,
    }
