"""The admin API's segments: ``/api/v1/segments`` CRUD, versions, plan, preview, members,
overlap and runs (admin key, problem+json errors, as the rest of ``dmp.web.persons``)."""

from __future__ import annotations

import time
from typing import Any

from flask import Response, jsonify, request

from dmp.access.apikeys import Scope
from dmp.membership import definitions, results
from dmp.membership.plan import plan
from dmp.membership.preview import overlap, preview
from dmp.storage import keyspace
from dmp.web.auth import scoped_blueprint
from dmp.web.deps import current_deps
from dmp.web.params import json_body, whole_number
from dmp.web.problems import Problem
from segments.definition import SegmentDefinition, parse_definition
from segments.rules import RuleError

bp = scoped_blueprint("segments", __name__, Scope.ADMIN, url_prefix="/api/v1")
MAX_BODY = 64 * 1024  # a definition is a few hundred bytes; a long list of them fits


def _body() -> Any:
    if (request.content_length or 0) > MAX_BODY:
        raise Problem(413, "Payload too large", f"a segment definition is at most {MAX_BODY} bytes")
    if not request.is_json:
        raise Problem(415, "Unsupported media type", "send the definition as application/json")
    data = json_body()
    if data is None:
        raise Problem(400, "Invalid body", "the body is not valid JSON")
    return data


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
def segments_list() -> Response:
    """Return every segment with its version and last run's size."""
    return jsonify([_view(s) for s in definitions.list_segments(current_deps().redis)])


@bp.post("/segments")
def segments_create() -> tuple[Response, int]:
    """Create a segment (409 if the id exists: change it with PUT)."""
    definition = _definition(_body())
    r = current_deps().redis
    if definitions.get_segment(r, definition.id) is not None:
        raise Problem(409, "Segment exists", f"{definition.id!r} exists: PUT it to change it")
    definitions.apply_definitions(r, [definition])
    return jsonify(_view(_stored(definition.id))), 201


@bp.get("/segments/<sid>")
def segments_get(sid: str) -> Response:
    """Return one segment."""
    return jsonify(_view(_stored(sid)))


@bp.put("/segments/<sid>")
def segments_put(sid: str) -> tuple[Response, int]:
    """Create or change a segment; a change is a new version (200), a new one 201."""
    data = _body()
    if isinstance(data, dict):
        if data.setdefault("id", sid) != sid:
            raise Problem(422, "Invalid segment", "segment.id: differs from the id in the URL")
    definition = _definition(data)
    ((_, _, changed),) = definitions.apply_definitions(current_deps().redis, [definition])
    view = _view(_stored(sid)) | {"changed": changed}
    return jsonify(view), 201 if view["version"] == 1 and changed else 200


@bp.delete("/segments/<sid>")
def segments_delete(sid: str) -> Response:
    """Delete a segment: the next run empties it; its versions stay."""
    version = definitions.delete_segment(current_deps().redis, sid)
    if version is None:
        raise Problem(404, "Segment not found", f"no segment {sid!r}", "not-found")
    return jsonify({"id": sid, "version": version, "deleted": True})


@bp.get("/segments/<sid>/versions")
def segments_versions(sid: str) -> Response:
    """Return every version of a segment, oldest first."""
    found = definitions.versions(current_deps().redis, sid)
    if not found:
        raise Problem(404, "Segment not found", f"no segment {sid!r}", "not-found")
    return jsonify(found)


def _sample() -> int:
    return whole_number("sample", 10, 0, 1000)


def _preview(definition: SegmentDefinition) -> Response:
    deps = current_deps()
    try:
        return jsonify(preview(deps.redis, deps.config, definition, _sample()))
    except LookupError as exc:
        raise _matrix_needed(exc) from None


@bp.get("/segments/<sid>/preview")
def segments_preview(sid: str) -> Response:
    """Preview a stored segment on the latest matrix."""
    return _preview(_stored(sid).definition)


@bp.post("/segments/preview")
def segments_preview_new() -> Response:
    """Preview a definition that is not stored."""
    return _preview(_definition(_body()))


@bp.post("/segments/plan")
def segments_plan() -> Response:
    """What storing the definitions (one, or a list) would add and remove."""
    data = _body()
    items = data if isinstance(data, list) else [data]
    found = [_definition(d, f"segment[{i}]") for i, d in enumerate(items)]
    deps = current_deps()
    try:
        return jsonify(plan(deps.redis, deps.config, found))
    except LookupError as exc:
        raise _matrix_needed(exc) from None


@bp.get("/segments/<sid>/members")
def segments_members(sid: str) -> Response:
    """Return a page of a segment's members in the last run, highest score first."""
    limit, offset = whole_number("limit", 100, 1, 10_000), whole_number("offset", 0, 0, 100_000_000)
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
def segments_overlap() -> Response:
    """Return the pairwise overlap of the last run's segments."""
    try:
        return jsonify(overlap(current_deps().config))
    except LookupError as exc:
        raise _matrix_needed(exc) from None


@bp.get("/segments/runs")
def segments_runs() -> Response:
    """Return the newest run records (``failed``: each segment that failed in a run and
    its error; such a segment keeps its members of the run before)."""
    return jsonify(results.run_records(current_deps().redis, 50))


@bp.post("/segments/runs")
def segments_run_now() -> tuple[Response, int]:
    """Ask the worker for a run now (202; a run at scale outlasts a request: poll
    ``GET /api/v1/segments/runs`` for its record)."""
    at = int(time.time() * 1000)
    current_deps().redis.set(keyspace.SEGMENTS_RUN_REQUESTED, at)
    return jsonify({"requested": at, "runs": "/api/v1/segments/runs"}), 202
