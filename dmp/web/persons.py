"""The admin API under ``/api/v1/``: persons and stages (``Authorization: Bearer <key>``)."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from redis import Redis

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
from dmp.web.personshapes import (
    EMAIL,
    ERASURE,
    LIMIT,
    PERSON,
    PID,
    REQUEST,
    REQUEST_STATE,
    STAGE_CHANGE,
    STAGE_RECORDED,
    UID,
)
from dmp.web.problems import Problem
from dmp.web.schema import Free, Obj, Text
from dmp.web.spec import (
    BAD_PARAMETER,
    NO_KEY,
    NOT_FOUND,
    TOO_LARGE,
    UNAVAILABLE,
    Reply,
    describe,
    problem,
)
from segments.matrix import MOMENTS, by_weight

bp = scoped_blueprint("persons", __name__, Scope.ADMIN, url_prefix="/api/v1")

ERRORS = {400: BAD_PARAMETER, 401: NO_KEY, 404: NOT_FOUND, 503: UNAVAILABLE}


def _person_response(pid: str | None, what: str, limit: int) -> Response:
    r = current_deps().redis  # the limit was read first: a bad one is a 400 even for nobody
    person = profiles.get_person(r, pid, limit) if pid else None
    if person is None:
        raise Problem(404, "Person not found", f"no person with {what}", "not-found")
    records = lifecycle.parse_records(
        r.lrange(keyspace.person(person["person_id"], "stages"), 0, -1)
    )
    person["stages"] = [stage_view(rec) for rec in records]
    row = snapshots.snapshot_row(current_deps().config, person["person_id"])
    if row is not None:
        row["score_breakdown"] = by_weight(row["score_breakdown"])
        # The snapshot keeps its moments in ms (machines read it); a person reads ISO.
        row.update({n: consent_rules.iso(row[n]) for n in MOMENTS if row.get(n) is not None})
    person["matrix"] = row
    return jsonify(person)


def stage_view(record: dict[str, Any]) -> dict[str, Any]:
    """Return a stage record as the API answers it: ``at`` in ISO 8601 UTC."""
    return {**record, "at": consent_rules.iso(record["at"])}


@bp.post("/persons/<pid>/stage")
@describe(
    tag="persons",
    params=(PID,),
    body=STAGE_CHANGE,
    security=("adminKey",),
    replies={
        201: Reply("The stage record.", schema=STAGE_RECORDED),
        **ERRORS,
        413: TOO_LARGE,
    },
)
def set_stage(pid: str) -> tuple[Response, int]:
    """Record a stage sales set: ``{"stage": "sal", "by": "who"}`` (201 with the record)."""
    body = STAGE_CHANGE.read()
    r = current_deps().redis
    live = _live_person(r, pid)
    record = lifecycle.record_stage(
        r, live, Stage(body["stage"]), source="api", by=body.get("by", "")
    )
    return jsonify({"person_id": live, **stage_view(record)}), 201


@bp.get("/persons/<pid>")
@describe(
    tag="persons",
    params=(PID, LIMIT),
    security=("adminKey",),
    replies={
        200: Reply("The person.", schema=PERSON),
        **ERRORS,
    },
)
def person(pid: str, limit: int) -> Response:
    """Return one person by id (a merged id leads to the person it was merged into)."""
    return _person_response(pid, f"id {pid}", limit)


@bp.get("/persons/<pid>/export")
@describe(
    tag="persons",
    params=(PID,),
    security=("adminKey",),
    replies={
        200: Reply(
            "Identifiers, traits, consents with proof, stages, score, segments, timeline.",
            schema=Obj({"format": Text(), "person_id": Text()}, required=("format",)),
        ),
        **ERRORS,
    },
)
def export(pid: str) -> Response:
    """Return everything dmp holds about a person, as one JSON document (GDPR Art. 15)."""
    deps = current_deps()
    found = export_person(deps.redis, deps.config, pid)
    if found is None:
        raise Problem(404, "Person not found", f"no person with id {pid}", "not-found")
    return jsonify(found)


@bp.delete("/persons/<pid>")
@describe(
    tag="persons",
    params=(PID,),
    body=ERASURE,
    security=("adminKey",),
    replies={
        200: Reply("Erased: what was removed where.", schema=Obj({"status": Text()})),
        202: Reply("Queued: the ingest worker applies it soon.", schema=REQUEST_STATE),
        **ERRORS,
        413: TOO_LARGE,
    },
)
def erase(pid: str) -> tuple[Response, int]:
    """Erase a person (GDPR Art. 17): 200 with what was removed where once the ingest
    worker applied it (at once, as a rule), else 202 with the request id to look for.
    An optional JSON body ``{"reason": "...", "by": "..."}`` goes into the erasure log."""
    body = ERASURE.read()
    r = current_deps().redis
    live = _live_person(r, pid)
    by, reason = body.get("by", ""), body.get("reason", "")
    request_id = requests.request_erasure(r, live, by=by, reason=reason)
    report = requests.wait_for(r, request_id, requests.WAIT_SECONDS)
    if report is None:
        return _queued(request_id, live)
    return jsonify({**report, "status": "erased"}), 200


def _live_person(r: Redis, pid: str) -> str:
    """Return the person ``pid`` is now (merges followed), or raise the 404 problem."""
    live = profiles.follow(r, pid)
    if not r.hexists(keyspace.person(live), "tier"):
        raise Problem(404, "Person not found", f"no person with id {pid}", "not-found")
    return live


def _queued(request_id: str, pid: str) -> tuple[Response, int]:
    """Return the 202 of a person request the ingest worker has not applied yet."""
    return jsonify({"request": request_id, "status": "queued", "person_id": pid}), 202


@bp.post("/persons/<pid>/unmerge")
@describe(
    tag="persons",
    params=(PID,),
    security=("adminKey",),
    replies={
        200: Reply("Unmerged: what went back.", schema=Obj({"status": Text()})),
        202: Reply("Queued: the ingest worker applies it soon.", schema=REQUEST_STATE),
        **ERRORS,
        409: problem("The merge cannot be undone."),
    },
)
def unmerge(pid: str) -> tuple[Response, int]:
    """Undo the merge of ``pid`` (an id merged into another person): 200 with what went
    back once the ingest worker applied it, else 202 with the request id."""
    r = current_deps().redis
    if not r.hexists(keyspace.person(pid), "merged_into"):
        detail = f"{pid} is no id merged into another person"
        raise Problem(404, "Merge not found", detail, "not-found")
    request_id = requests.request_unmerge(r, pid, by="api")
    report = requests.wait_for(r, request_id, requests.WAIT_SECONDS)
    if report is None:
        return _queued(request_id, pid)
    if not report["found"]:
        raise Problem(409, "Merge cannot be undone", report["error"], "conflict")
    return jsonify({**report, "status": "unmerged"}), 200


@bp.get("/erasures/<request_id>")
@describe(
    tag="persons",
    params=(REQUEST,),
    security=("adminKey",),
    replies={
        200: Reply("The erasure's report.", schema=Obj({"status": Text()})),
        202: Reply("Still queued.", schema=REQUEST_STATE),
        **ERRORS,
    },
)
def erasure_report(request_id: str) -> tuple[Response, int]:
    """Return an erasure request's report: 200 once applied, 202 while it waits."""
    r = current_deps().redis
    report = requests.report(r, request_id)
    if report is not None:
        return jsonify({**report, "status": "erased" if report["found"] else "not-found"}), 200
    if requests.queued(r, request_id):
        return jsonify({"request": request_id, "status": "queued"}), 202
    raise Problem(404, "Unknown request", f"no erasure request {request_id}", "not-found")


@bp.get("/persons/<pid>/consents")
@describe(
    tag="persons",
    params=(PID,),
    security=("adminKey",),
    replies={
        200: Reply(
            "Current consents per category and identifier, and every grant and withdrawal.",
            schema=Obj(
                {"person_id": Text(), "current": Obj(), "history": Free({"type": "array"})},
                required=("person_id", "current", "history"),
            ),
        ),
        **ERRORS,
    },
)
def consents(pid: str) -> Response:
    """Return a person's consents: per category, each identifier's current state with the
    proof that set it (time, source, site, event, trusted or a browser's claim, consent
    text version, double opt-in), and every grant and withdrawal in order."""
    r = current_deps().redis
    live = _live_person(r, pid)
    states = r.hgetall(keyspace.person(live))
    proofs = r.lrange(keyspace.person(live, consent_rules.LOG_FACET), 0, -1)
    view = consent_rules.consent_view(proofs, consent_rules.parse_states(states))
    return jsonify({"person_id": live, **view})


@bp.get("/persons")
@describe(
    tag="persons",
    params=(EMAIL, UID, LIMIT),
    security=("adminKey",),
    replies={
        200: Reply("The person.", schema=PERSON),
        **ERRORS,
    },
)
def find(email: str | None, uid: str | None, limit: int) -> Response:
    """Return the person with ``?email=`` or ``?uid=`` (the dmp_uid cookie); exactly one."""
    r = current_deps().redis
    if (email is None) == (uid is None):
        raise Problem(400, "Invalid parameter", "give exactly one of email= or uid=")
    if email is not None:
        normal = normalise_email(email)
        if not normal:
            raise Problem(400, "Invalid parameter", "email= is not an email address")
        ident = Identifier(IdKind.EMAIL, normal)
    else:
        ident = Identifier(IdKind.UID, uid or "")
    found = profiles.find_person(r, ident)
    return _person_response(found, f"{ident.kind.value} {ident.value}", limit)


@bp.get("/funnel")
@describe(
    tag="persons",
    security=("adminKey",),
    replies={
        200: Reply("Persons per stage and tier, conversion, days in stage.", schema=Obj()),
        401: NO_KEY,
        404: problem("No matrix was built yet."),
    },
)
def funnel() -> Response:
    """Return the latest build's funnel: stages, conversion, days in stage, tiers."""
    data = snapshots.latest_funnel(current_deps().config)
    if data is None:
        raise Problem(404, "No matrix yet", "run `dmp matrix build` first", "not-found")
    return jsonify(data)
