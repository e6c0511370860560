"""The admin API under ``/api/v1/``: persons and stages (``Authorization: Bearer <key>``)."""

from __future__ import annotations

import re

from flask import Response, jsonify, request

from dmp.access.apikeys import Scope
from dmp.matrix import snapshots
from dmp.people import consents as consent_rules
from dmp.people import lifecycle, profiles
from dmp.people.identity import Identifier, IdKind, normalise_email
from dmp.privacy import requests
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


@bp.delete("/persons/<pid>")
def erase(pid: str) -> tuple[Response, int]:
    """Erase a person (GDPR Art. 17): 200 with what was removed where once the ingest
    worker applied it (at once, as a rule), else 202 with the request id to look for.
    An optional JSON body ``{"reason": "...", "by": "..."}`` goes into the erasure log."""
    if not _PID.match(pid):
        raise Problem(400, "Invalid parameter", "a person id is 16 lowercase hex digits")
    if (request.content_length or 0) > 4096:
        raise Problem(413, "Payload too large", "an erasure request is a small JSON object")
    body = json_body() if request.content_length else {}
    if not isinstance(body, dict):
        raise Problem(400, "Invalid body", 'send a JSON object such as {"reason": "ticket 42"}')
    reason, by = body.get("reason", ""), body.get("by", "")
    for name, value in (("reason", reason), ("by", by)):
        if not isinstance(value, str) or len(value) > 500 or not value.isprintable():
            detail = f"{name} must be a string of at most 500 printable characters"
            raise Problem(400, "Invalid body", detail)
    r = current_deps().redis
    live = profiles.follow(r, pid)
    if not r.hexists(keyspace.person(live), "tier"):
        raise Problem(404, "Person not found", f"no person with id {pid}", "not-found")
    request_id = requests.request_erasure(r, live, by=by, reason=reason)
    report = requests.wait_for(r, request_id, requests.WAIT_SECONDS)
    if report is None:
        return jsonify({"request": request_id, "status": "queued", "person_id": live}), 202
    return jsonify({**report, "status": "erased"}), 200


@bp.post("/persons/<pid>/unmerge")
def unmerge(pid: str) -> tuple[Response, int]:
    """Undo the merge of ``pid`` (an id merged into another person): 200 with what went
    back once the ingest worker applied it, else 202 with the request id."""
    if not _PID.match(pid):
        raise Problem(400, "Invalid parameter", "a person id is 16 lowercase hex digits")
    r = current_deps().redis
    if not r.hexists(keyspace.person(pid), "merged_into"):
        detail = f"{pid} is no id merged into another person"
        raise Problem(404, "Merge not found", detail, "not-found")
    request_id = requests.request_unmerge(r, pid, by="api")
    report = requests.wait_for(r, request_id, requests.WAIT_SECONDS)
    if report is None:
        return jsonify({"request": request_id, "status": "queued", "person_id": pid}), 202
    if not report["found"]:
        raise Problem(409, "Merge cannot be undone", report["error"], "conflict")
    return jsonify({**report, "status": "unmerged"}), 200


@bp.get("/erasures/<request_id>")
def erasure_report(request_id: str) -> tuple[Response, int]:
    """Return an erasure request's report: 200 once applied, 202 while it waits."""
    if not _REQUEST.match(request_id):
        raise Problem(400, "Invalid parameter", "a request id is 16 lowercase hex digits")
    r = current_deps().redis
    report = requests.report(r, request_id)
    if report is not None:
        return jsonify({**report, "status": "erased" if report["found"] else "not-found"}), 200
    if requests.queued(r, request_id):
        return jsonify({"request": request_id, "status": "queued"}), 202
    raise Problem(404, "Unknown request", f"no erasure request {request_id}", "not-found")


_REQUEST = re.compile(r"^[0-9a-f]{16}$")


@bp.get("/persons/<pid>/consents")
def consents(pid: str) -> Response:
    """Return a person's consents: per category, each identifier's current state with the
    proof that set it (time, source, site, event, trusted or a browser's claim, consent
    text version, double opt-in), and every grant and withdrawal in order."""
    if not _PID.match(pid):
        raise Problem(400, "Invalid parameter", "a person id is 16 lowercase hex digits")
    r = current_deps().redis
    live = profiles.follow(r, pid)
    if not r.hexists(keyspace.person(live), "tier"):
        raise Problem(404, "Person not found", f"no person with id {pid}", "not-found")
    states = r.hgetall(keyspace.person(live, consent_rules.STATE_FACET))
    proofs = r.lrange(keyspace.person(live, consent_rules.LOG_FACET), 0, -1)
    view = consent_rules.consent_view(proofs, consent_rules.parse_states(states))
    return jsonify({"person_id": live, **view})


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
