"""The admin API's segments: ``/api/v1/segments`` CRUD, versions, plan, preview, members,
overlap and runs (admin key, problem+json errors, as the rest of ``dmp.web.persons``)."""

from __future__ import annotations

import time
from typing import Any

from flask import Response, jsonify

from dmp.access.apikeys import Scope
from dmp.membership import definitions, results
from dmp.membership.plan import plan
from dmp.membership.preview import overlap, preview
from dmp.storage import keyspace
from dmp.web.auth import scoped_blueprint
from dmp.web.deps import current_deps
from dmp.web.problems import Problem
from dmp.web.schema import Free, ListOf, Obj, Text
from dmp.web.segmentshapes import (
    DELETED,
    LIMIT,
    MEMBERS,
    OFFSET,
    ONE,
    ONE_OR_MORE,
    SAMPLE,
    SEGMENT,
    SID,
)
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
from segments.definition import SegmentDefinition, parse_definition
from segments.rules import RuleError

bp = scoped_blueprint("segments", __name__, Scope.ADMIN, url_prefix="/api/v1")
ERRORS = {400: BAD_PARAMETER, 401: NO_KEY, 503: UNAVAILABLE}
WRITES = {
    **ERRORS,
    413: TOO_LARGE,
    415: problem("The body is not application/json."),
    422: problem("The definition is not valid; the detail names the path."),
}
NOT_READY = problem("No matrix was built yet (or no run made).")


def _definition(data: Any, path: str = "segment") -> SegmentDefinition:
    try:
        return parse_definition(data, path)
    except RuleError as exc:
        raise Problem(422, "Invalid segment", str(exc), "invalid-segment") from None


def _stored(sid: str) -> definitions.StoredSegment:
    found = definitions.get_segment(current_deps().redis, sid)
    if found is None:
        raise Problem(404, "Segment not found", f"no segment {sid!r}", "not-found")
    return found


def _view(s: definitions.StoredSegment) -> dict[str, Any]:
    d = s.definition
    members, last_run = current_deps().redis.hmget(keyspace.segment(d.id), "members", "last_run")
    return {
        "id": d.id,
        "name": d.name,
        "description": d.description,
        "iab": list(d.iab),
        "version": s.version,
        "updated": s.updated,
        "definition": d.source,
        "members": int(members) if members is not None else None,
        "last_run": last_run,
    }


def _matrix_needed(exc: LookupError) -> Problem:
    return Problem(409, "Not ready", str(exc), "not-ready")


@bp.get("/segments")
@describe(
    tag="segments",
    security=("adminKey",),
    replies={200: Reply("Every segment.", schema=ListOf(SEGMENT)), **ERRORS},
)
def segments_list() -> Response:
    """Return every segment with its version and last run's size."""
    return jsonify([_view(s) for s in definitions.list_segments(current_deps().redis)])


@bp.post("/segments")
@describe(
    tag="segments",
    body=ONE,
    security=("adminKey",),
    replies={
        201: Reply("The stored segment.", schema=SEGMENT),
        **WRITES,
        409: problem("A segment with that id exists: PUT it to change it."),
    },
)
def segments_create() -> tuple[Response, int]:
    """Create a segment (409 if the id exists: change it with PUT)."""
    definition = _definition(ONE.read())
    r = current_deps().redis
    if definitions.get_segment(r, definition.id) is not None:
        raise Problem(409, "Segment exists", f"{definition.id!r} exists: PUT it to change it")
    definitions.apply_definitions(r, [definition])
    return jsonify(_view(_stored(definition.id))), 201


@bp.get("/segments/<sid>")
@describe(
    tag="segments",
    params=(SID,),
    security=("adminKey",),
    replies={200: Reply("The segment.", schema=SEGMENT), **ERRORS, 404: NOT_FOUND},
)
def segments_get(sid: str) -> Response:
    """Return one segment."""
    return jsonify(_view(_stored(sid)))


@bp.put("/segments/<sid>")
@describe(
    tag="segments",
    params=(SID,),
    body=ONE,
    security=("adminKey",),
    replies={
        200: Reply("Changed (a new version) or unchanged.", schema=SEGMENT),
        201: Reply("Created.", schema=SEGMENT),
        **WRITES,
    },
)
def segments_put(sid: str) -> tuple[Response, int]:
    """Create or change a segment; a change is a new version (200), a new one 201."""
    data = ONE.read()
    if isinstance(data, dict):
        if data.setdefault("id", sid) != sid:
            raise Problem(422, "Invalid segment", "segment.id: differs from the id in the URL")
    definition = _definition(data)
    ((_, _, changed),) = definitions.apply_definitions(current_deps().redis, [definition])
    view = _view(_stored(sid)) | {"changed": changed}
    return jsonify(view), 201 if view["version"] == 1 and changed else 200


@bp.delete("/segments/<sid>")
@describe(
    tag="segments",
    params=(SID,),
    security=("adminKey",),
    replies={
        200: Reply("Deleted; its versions stay.", schema=DELETED),
        **ERRORS,
        404: NOT_FOUND,
    },
)
def segments_delete(sid: str) -> Response:
    """Delete a segment: the next run empties it; its versions stay."""
    version = definitions.delete_segment(current_deps().redis, sid)
    if version is None:
        raise Problem(404, "Segment not found", f"no segment {sid!r}", "not-found")
    return jsonify({"id": sid, "version": version, "deleted": True})


@bp.get("/segments/<sid>/versions")
@describe(
    tag="segments",
    params=(SID,),
    security=("adminKey",),
    replies={
        200: Reply("Every version, oldest first.", schema=ListOf(Obj())),
        **ERRORS,
        404: NOT_FOUND,
    },
)
def segments_versions(sid: str) -> Response:
    """Return every version of a segment, oldest first."""
    found = definitions.versions(current_deps().redis, sid)
    if not found:
        raise Problem(404, "Segment not found", f"no segment {sid!r}", "not-found")
    return jsonify(found)


def _preview(definition: SegmentDefinition, sample: int) -> Response:
    deps = current_deps()
    try:
        return jsonify(preview(deps.redis, deps.config, definition, sample))
    except LookupError as exc:
        raise _matrix_needed(exc) from None


PREVIEW = Reply("Size, breakdowns, and a sample with the conditions met.", schema=Obj())


@bp.get("/segments/<sid>/preview")
@describe(
    tag="segments",
    params=(SID, SAMPLE),
    security=("adminKey",),
    replies={200: PREVIEW, **ERRORS, 404: NOT_FOUND, 409: NOT_READY},
)
def segments_preview(sid: str, sample: int) -> Response:
    """Preview a stored segment on the latest matrix."""
    return _preview(_stored(sid).definition, sample)


@bp.post("/segments/preview")
@describe(
    tag="segments",
    params=(SAMPLE,),
    body=ONE,
    security=("adminKey",),
    replies={200: PREVIEW, **WRITES, 409: NOT_READY},
)
def segments_preview_new(sample: int) -> Response:
    """Preview a definition that is not stored."""
    return _preview(_definition(ONE.read()), sample)


@bp.post("/segments/plan")
@describe(
    tag="segments",
    body=ONE_OR_MORE,
    security=("adminKey",),
    replies={
        200: Reply("Who storing them would add and remove.", schema=Free({})),
        **WRITES,
        409: NOT_READY,
    },
)
def segments_plan() -> Response:
    """What storing the definitions (one, or a list) would add and remove."""
    data = ONE_OR_MORE.read()
    items = data if isinstance(data, list) else [data]
    found = [_definition(d, f"segment[{i}]") for i, d in enumerate(items)]
    deps = current_deps()
    try:
        return jsonify(plan(deps.redis, deps.config, found))
    except LookupError as exc:
        raise _matrix_needed(exc) from None


@bp.get("/segments/<sid>/members")
@describe(
    tag="segments",
    params=(SID, LIMIT, OFFSET),
    security=("adminKey",),
    replies={
        200: Reply("A page of members, highest score first.", schema=MEMBERS),
        **ERRORS,
        404: NOT_FOUND,
    },
)
def segments_members(sid: str, limit: int, offset: int) -> Response:
    """Return a page of a segment's members in the last run, highest score first."""
    config = current_deps().config
    run = results.latest_run(config)
    rows = None if run is None else results.member_rows(config, sid, limit + offset, run)
    if rows is None:
        raise Problem(404, "Segment not found", f"no segment {sid!r} in the last run", "not-found")
    page = rows.slice(offset, limit).to_dicts()
    return jsonify(
        {
            "id": sid,
            "run_id": run["run_id"],
            "as_of": run["as_of"],
            "total": run["members"][sid],
            "offset": offset,
            "members": page,
        }
    )


@bp.get("/segments/overlap")
@describe(
    tag="segments",
    security=("adminKey",),
    replies={200: Reply("Pairwise overlap.", schema=Obj()), 401: NO_KEY, 409: NOT_READY},
)
def segments_overlap() -> Response:
    """Return the pairwise overlap of the last run's segments."""
    try:
        return jsonify(overlap(current_deps().config))
    except LookupError as exc:
        raise _matrix_needed(exc) from None


@bp.get("/segments/runs")
@describe(
    tag="segments",
    security=("adminKey",),
    replies={200: Reply("The newest runs, newest first.", schema=ListOf(Obj())), **ERRORS},
)
def segments_runs() -> Response:
    """Return the newest run records (``failed``: each segment that failed in a run and
    its error; such a segment keeps its members of the run before)."""
    return jsonify(results.run_records(current_deps().redis, 50))


@bp.post("/segments/runs")
@describe(
    tag="segments",
    security=("adminKey",),
    replies={
        202: Reply(
            "Asked: poll GET /api/v1/segments/runs for its record.",
            schema=Obj({"requested": Free({"type": "integer"}), "runs": Text()}),
        ),
        **ERRORS,
    },
)
def segments_run_now() -> tuple[Response, int]:
    """Ask the worker for a run now (202; a run at scale outlasts a request: poll
    ``GET /api/v1/segments/runs`` for its record)."""
    at = int(time.time() * 1000)
    current_deps().redis.set(keyspace.SEGMENTS_RUN_REQUESTED, at)
    return jsonify({"requested": at, "runs": "/api/v1/segments/runs"}), 202
