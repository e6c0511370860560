"""The OpenAPI 3.1 document of every endpoint, built from the routes' own declarations.

:func:`build_document` walks the app's URL map: each view states its operation with
:func:`dmp.web.spec.describe` (the fast paths with :func:`dmp.web.spec.static`), so a route
without one fails the document's test, and what is documented is what is validated.
``GET /api/v1/openapi.json`` serves it, public and cacheable.
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import metadata
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from werkzeug.routing import Rule

from dmp.web.auth import UI_PREFIX
from dmp.web.problems import TYPE_BASE
from dmp.web.schema import Free, Obj, Text
from dmp.web.spec import SECURITY_SCHEMES, Reply, describe, operation_of

PATH = "/api/v1/openapi.json"
bp = Blueprint("openapi", __name__)

PROBLEM = Obj(
    {
        "type": Text(description=f"A URI naming the kind of problem ({TYPE_BASE}…)."),
        "title": Text(description="A short summary of the kind of problem."),
        "status": Free({"type": "integer", "minimum": 400, "maximum": 599}),
        "detail": Text(description="What went wrong with this request."),
    },
    required=("type", "title", "status"),
    description="An RFC 9457 problem; some add members (a batch's errors, say).",
)
TAGS = {
    "collect": "Pixel, tag and the Segment tracking API: data in (a site's write key).",
    "import": "Webhooks of tools that hand dmp their data (import keys).",
    "persons": "The admin API: persons, stages, consents, access and erasure.",
    "segments": "The admin API: segment definitions, previews, runs and members.",
    "destinations": "The admin API: where segments go, their syncs and reports.",
    "lookup": "The pull API for ad tools: a visitor's segments (partner keys).",
    "audiences": "The pull API for ad tools: audiences, members and changes (partner keys).",
    "ops": "Health, metrics and this document.",
}
_ARGUMENT = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")


def openapi_path(rule: str) -> str:
    """Return a Werkzeug rule as an OpenAPI path: ``/persons/<pid>`` is ``/persons/{pid}``."""
    return _ARGUMENT.sub(r"{\1}", rule)


def is_ui(rule: str) -> bool:
    """Return whether a route is one of the marketer UI's pages (not documented here)."""
    return rule == UI_PREFIX or rule.startswith(f"{UI_PREFIX}/")


def documented_methods(rule: Rule) -> list[str]:
    """Return the methods a rule serves that the document lists: all but the HEAD and
    OPTIONS that Werkzeug and Flask add by themselves."""
    added = {"HEAD"} | ({"OPTIONS"} if getattr(rule, "provide_automatic_options", False) else set())
    return sorted((rule.methods or set()) - added)


def build_document(app: Flask) -> dict[str, Any]:
    """Return the OpenAPI document of every route of ``app`` (ValueError for a route
    that declares no operation)."""
    paths: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if is_ui(rule.rule):
            continue  # pages for people with a login, not an API
        operation = operation_of(app.view_functions[rule.endpoint])
        if operation is None:
            raise ValueError(f"{rule.rule} ({rule.endpoint}) declares no operation")
        path = openapi_path(rule.rule)
        for method in documented_methods(rule):
            operation_id = _unique(f"{method.lower()}_{rule.endpoint}", path, used)
            paths.setdefault(path, {})[method.lower()] = operation.openapi(operation_id)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dmp",
            "version": _version(),
            "summary": "Audience data platform: collect, persons, segments, lookups.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "paths": paths,
        "components": {
            "schemas": {"Problem": PROBLEM.schema()},
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


def _unique(name: str, path: str, used: set[str]) -> str:
    """Return ``name`` as an operation id, with the path's words when it is taken."""
    found = re.sub(r"[^A-Za-z0-9_]+", "_", name)
    if found in used:
        found = re.sub(r"[^A-Za-z0-9_]+", "_", f"{name}{path}").rstrip("_")
    used.add(found)
    return found


def _version() -> str:
    try:
        return metadata.version("dmp")
    except metadata.PackageNotFoundError:  # run from a checkout that was not installed
        return "0.0.0"


@bp.get(PATH)
@describe(
    tag="ops",
    replies={
        200: Reply("The document.", schema={"type": "object"}, headers={"ETag": "Its hash."}),
        304: Reply("Unchanged since the ETag sent in If-None-Match.", None),
    },
)
def document() -> Response:
    """Return this OpenAPI 3.1 document. It is built once per app, public and cacheable,
    with an ETag."""
    cached = current_app.extensions.get("dmp_openapi")
    if cached is None:
        body = json.dumps(build_document(current_app), sort_keys=False).encode()
        cached = (body, hashlib.sha256(body).hexdigest()[:32])
        current_app.extensions["dmp_openapi"] = cached
    body, etag = cached
    response = Response(body, mimetype="application/json")
    response.headers["Cache-Control"] = "public, max-age=3600"
    response.set_etag(etag)
    return response.make_conditional(request)
