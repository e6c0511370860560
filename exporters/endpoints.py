"""The admin API's destinations: ``/api/v1/destinations`` (admin key), as the CLI's
``dmp destinations`` and ``dmp export``: settings (never a secret: options name the
environment variables secrets are read from), a credentials test, sync reports, and a
sync asked of the worker."""

from __future__ import annotations

import shutil
import time
from typing import Any

from flask import Response, jsonify

from dmp.access.apikeys import Scope
from dmp.storage import exportfiles
from dmp.web.auth import scoped_blueprint
from dmp.web.deps import current_deps
from dmp.web.params import JsonBody, Param, WholeNumber
from dmp.web.problems import Problem
from dmp.web.schema import Either, Flag, Free, ListOf, Obj, Text
from dmp.web.spec import BAD_PARAMETER, NO_KEY, NOT_FOUND, UNAVAILABLE, Reply, describe, problem
from exporters import export, reports, settings
from exporters.destination import ExportError
from exporters.registry import KINDS

bp = scoped_blueprint("destinations", __name__, Scope.ADMIN, url_prefix="/api/v1")
ERRORS = {400: BAD_PARAMETER, 401: NO_KEY, 503: UNAVAILABLE}
NAME = Param(
    "name",
    Text(max_length=64, pattern="[a-z0-9][a-z0-9_-]*"),
    "path",
    description="A destination's name.",
    status=404,
)
LIMIT = WholeNumber("limit", 20, 1, 200, "Sync reports to return, newest first.")
_NAME_TEXT = Text(max_length=64, pattern="[a-z0-9][a-z0-9_-]*")
BODY = JsonBody(
    Obj(
        {
            "name": _NAME_TEXT,
            "kind": Text(enum=tuple(sorted(KINDS))),
            "segments": ListOf(Text(max_length=64), 1, 100),
            "every": Either((Text(max_length=16), Free({"type": "integer"}))),
            "options": Free(
                {"type": "object", "additionalProperties": {"type": "string", "maxLength": 2000}}
            ),
        },
        required=("name", "kind", "segments"),
        extra=False,
    ),
    max_bytes=64 * 1024,
    strict=True,
    example={
        "name": "meta-retargeting",
        "kind": "meta",
        "segments": ["hot-leads"],
        "every": "15m",
        "options": {"token_env": "META_TOKEN", "audience.hot-leads": "23850000000000000"},
    },
)
RUN = JsonBody(Obj({"full": Flag()}, extra=False), max_bytes=1024, required=False)
DESTINATION = Obj(
    {
        "name": Text(),
        "kind": Text(),
        "segments": ListOf(Text()),
        "every_seconds": Free({"type": "integer"}),
        "options": Obj(),
    },
    required=("name", "kind", "segments", "every_seconds", "options"),
)
REFUSED = problem("The settings are not acceptable; the detail says why.")


def _found(name: str) -> settings.Settings:
    found = settings.load(current_deps().redis, name)
    if found is None:
        raise Problem(404, "Destination not found", f"no destination {name!r}", "not-found")
    return found


def _settings(data: dict[str, Any], name: str | None = None) -> settings.Settings:
    every = data.get("every", "15m")
    options = data.get("options") or {}
    if not isinstance(options, dict) or not all(isinstance(v, str) for v in options.values()):
        raise Problem(400, "Invalid destination", "options: an object of strings")
    if not isinstance(every, str) and (type(every) is not int):  # 1.5, true: no schedule
        raise Problem(400, "Invalid destination", "every: seconds (a whole number) or like 15m")
    try:
        seconds = every if isinstance(every, int) else settings.parse_every(every)
        return settings.validate(
            current_deps().redis,
            name or data["name"],
            data["kind"],
            data["segments"],
            seconds,
            options,
        )
    except settings.Invalid as exc:
        raise Problem(400, "Invalid destination", str(exc), "invalid-destination") from None


@bp.get("/destinations")
@describe(
    tag="destinations",
    security=("adminKey",),
    replies={200: Reply("Every destination.", schema=ListOf(DESTINATION)), **ERRORS},
)
def destinations_list() -> Response:
    """Return every destination's settings and its last sync."""
    r = current_deps().redis
    out = []
    for name in settings.names(r):
        found = settings.load(r, name)
        if found is not None:
            last = (reports.recent(r, name, 1) or [None])[0]
            out.append({**settings.shown(found), "last_sync": last})
    return jsonify(out)


@bp.post("/destinations")
@describe(
    tag="destinations",
    body=BODY,
    security=("adminKey",),
    replies={
        201: Reply("The stored destination.", schema=DESTINATION),
        **ERRORS,
        400: REFUSED,
        409: problem("A destination of that name exists: PUT it to change it."),
        413: problem("The body is too large."),
        415: problem("The body is not application/json."),
    },
)
def destinations_create() -> tuple[Response, int]:
    """Add a destination (secrets are refused: options name environment variables)."""
    found = _settings(BODY.read())
    if not settings.save(current_deps().redis, found):
        raise Problem(409, "Destination exists", f"{found.name!r} exists: PUT it to change it")
    return jsonify(settings.shown(found)), 201


@bp.get("/destinations/<name>")
@describe(
    tag="destinations",
    params=(NAME,),
    security=("adminKey",),
    replies={200: Reply("The destination.", schema=DESTINATION), **ERRORS, 404: NOT_FOUND},
)
def destinations_get(name: str) -> Response:
    """Return a destination's settings and its newest sync reports."""
    found = _found(name)
    return jsonify(
        {**settings.shown(found), "runs": reports.recent(current_deps().redis, name, 10)}
    )


@bp.put("/destinations/<name>")
@describe(
    tag="destinations",
    params=(NAME,),
    body=BODY,
    security=("adminKey",),
    replies={
        200: Reply("The stored destination.", schema=DESTINATION),
        **ERRORS,
        400: REFUSED,
        404: NOT_FOUND,
        413: problem("The body is too large."),
        415: problem("The body is not application/json."),
    },
)
def destinations_put(name: str) -> Response:
    """Replace a destination's settings (what it holds is kept)."""
    _found(name)
    data = BODY.read()
    if data["name"] != name:
        raise Problem(400, "Invalid destination", "name: must be the name in the path")
    found = _settings(data, name)
    settings.save(current_deps().redis, found, replace=True)
    return jsonify(settings.shown(found))


@bp.delete("/destinations/<name>")
@describe(
    tag="destinations",
    params=(NAME,),
    security=("adminKey",),
    replies={
        200: Reply("Removed.", schema=Obj({"name": Text(), "removed": Flag()})),
        **ERRORS,
        404: NOT_FOUND,
    },
)
def destinations_delete(name: str) -> Response:
    """Remove a destination and what dmp kept of its syncs (the platform keeps its
    audience)."""
    deps = current_deps()
    if not settings.remove(deps.redis, name):
        raise Problem(404, "Destination not found", f"no destination {name!r}", "not-found")
    shutil.rmtree(exportfiles.exports_dir(deps.config) / name, ignore_errors=True)
    return jsonify({"name": name, "removed": True})


@bp.post("/destinations/<name>/test")
@describe(
    tag="destinations",
    params=(NAME,),
    security=("adminKey",),
    replies={
        200: Reply(
            "The credentials work.", schema=Obj({"name": Text(), "ok": Flag(), "detail": Text()})
        ),
        **ERRORS,
        404: NOT_FOUND,
        502: problem("The platform refused the credentials or a target; the detail says why."),
    },
)
def destinations_test(name: str) -> Response:
    """Make a cheap authenticated call to the platform that proves the credentials."""
    found = _found(name)
    try:
        detail = export.prove_credentials(found)
    except (ExportError, OSError) as exc:
        raise Problem(502, "Destination test failed", str(exc), "destination-test") from None
    return jsonify({"name": name, "ok": True, "detail": detail})


@bp.get("/destinations/<name>/runs")
@describe(
    tag="destinations",
    params=(NAME, LIMIT),
    security=("adminKey",),
    replies={
        200: Reply("Sync reports, newest first.", schema=ListOf(Obj())),
        **ERRORS,
        404: NOT_FOUND,
    },
)
def destinations_runs(name: str, limit: int) -> Response:
    """Return a destination's sync reports: per segment added, removed, skipped by
    reason, failed (with samples), and how long it took."""
    _found(name)
    return jsonify(reports.recent(current_deps().redis, name, limit))


@bp.post("/destinations/<name>/runs")
@describe(
    tag="destinations",
    params=(NAME,),
    body=RUN,
    security=("adminKey",),
    replies={
        202: Reply(
            "Asked: the worker syncs at its next look; poll the runs.",
            schema=Obj({"requested": Free({"type": "integer"}), "full": Flag(), "runs": Text()}),
        ),
        **ERRORS,
        404: NOT_FOUND,
    },
)
def destinations_run_now(name: str) -> tuple[Response, int]:
    """Ask the worker to sync the destination now (``{"full": true}`` sends everything
    again)."""
    _found(name)
    full = bool(RUN.read().get("full"))
    export.request(current_deps().redis, name, full=full)
    at = int(time.time() * 1000)
    runs = f"/api/v1/destinations/{name}/runs"
    return jsonify({"requested": at, "full": full, "runs": runs}), 202
