"""The admin API under ``/api/v1/``: persons and stages (``Authorization: Bearer <key>``)."""

from __future__ import annotations

import re

from flask import Response, jsonify, request

from dmp.access.apikeys import Scope
from dmp.matrix import snapshots
from dmp.people import lifecycle, profiles
from dmp.people.identity import Identifier, IdKind, normalise_email
from dmp.privacy.export import export_person
from dmp.records import Stage
from dmp.storage import keyspace
from dmp.web.auth import scoped_blueprint
from dmp.web.deps import current_deps
from dmp.web.params import json_body, whole_number
from dmp.web.problems import Problem
from segments.matrix import by_weight

bp = scoped_blueprint("persons", __name__, Scope.ADMIN, url_prefix="/api/v1")

_PID = re.compile(r"^[0-9a-f]{16}$")


def _person_response(pid: str | None, what: str) -> Response:
    limit = whole_number("limit", 100, 1, 1000)  # a bad limit is a 400 even for nobody
    r = current_deps().redis
    person = profiles.get_person(r, pid, limit) if pid else None
    if person is None:
        raise Problem(404, "Person not found", f"no person with {what}", "not-found")
    person["stages"] = lifecycle.parse_records(
        r.lrange(keyspace.person(person["person_id"], "stages"), 0, -1)
    )
    row = snapshots.snapshot_row(current_deps().config, person["person_id"])
    if row is not None:
        row["score_breakdown"] = by_weight(row["score_breakdown"])
    person["matrix"] = row
    return jsonify(person)


@bp.post("/persons/<pid>/stage")
def set_stage(pid: str) -> tuple[Response, int]:
    """Record a stage sales set: ``{"stage": "sal", "by": "who"}`` (201 with the record)."""
    if not _PID.match(pid):
        raise Problem(400, "Invalid parameter", "a person id is 16 lowercase hex digits")
    if (request.content_length or 0) > 4096:
        raise Problem(413, "Payload too large", "a stage change is a small JSON object")
    body = json_body()
    if not isinstance(body, dict):
        raise Problem(400, "Invalid body", 'send a JSON object such as {"stage": "sal"}')
    stage, by = body.get("stage"), body.get("by", "")
    if not isinstance(stage, str) or stage not in Stage._value2member_map_:
        known = ", ".join(s.value for s in Stage)
        raise Problem(400, "Invalid stage", f"stage must be one of {known}")
    if not isinstance(by, str) or len(by) > 200 or not by.isprintable():  # no "\ud800", NUL
        detail = "by must be a string of at most 200 printable characters"
        raise Problem(400, "Invalid body", detail)
    r = current_deps().redis
    live = profiles.follow(r, pid)
    if not r.hexists(keyspace.person(live), "tier"):
        raise Problem(404, "Person not found", f"no person with id {pid}", "not-found")
    record = lifecycle.record_stage(r, live, Stage(stage), source="api", by=by)
    return jsonify({"person_id": live, **record}), 201


@bp.get("/persons/<pid>")
def person(pid: str) -> Response:
    """Return one person by id (a merged id leads to the person it was merged into)."""
    if not _PID.match(pid):
        raise Problem(400, "Invalid parameter", "a person id is 16 lowercase hex digits")
    return _person_response(pid, f"id {pid}")


@bp.get("/persons/<pid>/export")
def export(pid: str) -> Response:
    """Return everything dmp holds about a person, as one JSON document (GDPR Art. 15)."""
    if not _PID.match(pid):
        raise Problem(400, "Invalid parameter", "a person id is 16 lowercase hex digits")
    deps = current_deps()
    found = export_person(deps.redis, deps.config, pid)
    if found is None:
        raise Problem(404, "Person not found", f"no person with id {pid}", "not-found")
    return jsonify(found)


@bp.get("/persons")
def find() -> Response:
    """Return the person with ``?email=`` or ``?uid=`` (the dmp_uid cookie)."""
    r = current_deps().redis
    email, uid = request.args.get("email"), request.args.get("uid")
    if (email is None) == (uid is None):
        raise Problem(400, "Invalid parameter", "give exactly one of email= or uid=")
    if email is not None:
        normal = normalise_email(email)
        if not normal:
            raise Problem(400, "Invalid parameter", "email= is not an email address")
        ident = Identifier(IdKind.EMAIL, normal)
    else:
        if not uid or len(uid) > 64:
            raise Problem(400, "Invalid parameter", "uid= must be a dmp_uid cookie value")
        ident = Identifier(IdKind.UID, uid)
    return _person_response(profiles.find_person(r, ident), f"{ident.kind.value} {ident.value}")


@bp.get("/funnel")
def funnel() -> Response:
    """Return the latest build's funnel: stages, conversion, days in stage, tiers."""
    data = snapshots.latest_funnel(current_deps().config)
    if data is None:
        raise Problem(404, "No matrix yet", "run `dmp matrix build` first", "not-found")
    return jsonify(data)
