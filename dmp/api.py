"""The admin API under ``/api/v1/``: person lookups, with ``Authorization: Bearer <key>``."""

from __future__ import annotations

import re

from flask import Blueprint, Response, jsonify, request

from dmp import profiles
from dmp.apikeys import Scope, check_key
from dmp.deps import current_deps
from dmp.identity import Identifier, IdKind, normalise_email
from dmp.problems import Problem

bp = Blueprint("api", __name__, url_prefix="/api/v1")

_PID = re.compile(r"^[0-9a-f]{16}$")


@bp.before_request
def require_admin_key() -> None:
    """Refuse requests without a valid admin key (401, problem+json)."""
    header = request.headers.get("Authorization", "")
    key = header[7:].strip() if header[:7].lower() == "bearer " else ""
    if not check_key(current_deps().redis, key, Scope.ADMIN):
        raise Problem(401, "Unauthorized", "send an admin key as 'Authorization: Bearer <key>'")


def _limit() -> int:
    raw = request.args.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise Problem(400, "Invalid parameter", "limit must be a whole number from 1 to 1000")
    return int(raw)


def _person_response(pid: str | None, what: str) -> Response:
    person = profiles.get_person(current_deps().redis, pid, _limit()) if pid else None
    if person is None:
        raise Problem(404, "Person not found", f"no person with {what}", "not-found")
    return jsonify(person)


@bp.get("/persons/<pid>")
def person(pid: str) -> Response:
    """Return one person by id (a merged id leads to the person it was merged into)."""
    if not _PID.match(pid):
        raise Problem(400, "Invalid parameter", "a person id is 16 lowercase hex digits")
    return _person_response(pid, f"id {pid}")


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
