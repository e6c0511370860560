"""Who may call a route: API keys from the ``Authorization`` header, checked per scope.

Every blueprint states its scope where it is made (:func:`scoped_blueprint`), so a route
moved to another module takes that module's stated scope, never another's by accident;
routes open to the world are listed in :data:`PUBLIC` and a test walks the URL map to
hold every other route to a key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, request
from werkzeug.datastructures import Authorization

from dmp.access.apikeys import Scope, check_key
from dmp.web.deps import current_deps
from dmp.web.problems import PRIVATE, Problem

# Routes anyone may call: browsers and SDKs (their write key is a public claim, checked by
# the collector itself), load balancers, Prometheus, and readers of the OpenAPI document.
PUBLIC = frozenset(
    {
        "/p.gif",
        "/dmp.js",
        "/collect",
        "/v1/<kind>",
        "/v1/batch",
        "/v1/import",
        "/v1/b",  # analytics.js 2.0's short batch path
        "/v1/projects/<write_key>/settings",  # what analytics.js 2.0 loads first
        "/healthz",
        "/metrics",
        "/api/v1/openapi.json",
    }
)
# The marketer UI (dmp.ui) lives under this prefix: its pages take a login session, not a
# key, and are not part of the API's OpenAPI document.
UI_PREFIX = "/ui"
_HINT = {
    Scope.ADMIN: "send an admin key as 'Authorization: Bearer <key>'",
    Scope.PARTNER: "send a partner key as 'Authorization: Bearer <key>'",
    Scope.IMPORT: "send an import key as 'Authorization: Bearer <key>' or ?key=",
}


def bearer_token(authorization: Authorization | None) -> str:
    """Return the token of a parsed ``Authorization: Bearer`` header ('' for any other)."""
    if authorization is None or authorization.type != "bearer":
        return ""
    return authorization.token or ""


def environ_token(environ: Mapping[str, Any]) -> str:
    """Return the bearer token of a raw WSGI request (the fast paths before Flask)."""
    return bearer_token(Authorization.from_header(environ.get("HTTP_AUTHORIZATION")))


def require_key(*scopes: Scope, query_fallback: bool = False) -> None:
    """Raise 401 (problem+json) unless the request carries a key of one of ``scopes``: as
    a bearer token or, with ``query_fallback`` (for tools that cannot set headers), as
    ``?key=``, which takes import keys only (a URL ends up in access logs)."""
    key = bearer_token(request.authorization)
    if not key and query_fallback:
        key, scopes = request.args.get("key", ""), tuple(s for s in scopes if s is Scope.IMPORT)
    r = current_deps().redis
    if not any(check_key(r, key, scope) for scope in scopes):
        raise Problem(401, "Unauthorized", _HINT[scopes[0] if scopes else Scope.IMPORT])


def scoped_blueprint(
    name: str, import_name: str, *scopes: Scope, query_fallback: bool = False, **options: Any
) -> Blueprint:
    """Return a blueprint whose every route refuses requests without a key of one of
    ``scopes`` (``?key=`` too with ``query_fallback``) and whose answers are private
    (:func:`private`)."""
    bp = Blueprint(name, import_name, **options)
    bp.before_request(lambda: require_key(*scopes, query_fallback=query_fallback))
    bp.after_request(private)
    return bp


def private(response: Response) -> Response:
    """Mark an answer that may carry personal data: not to be cached, nor sniffed."""
    response.headers.update(PRIVATE)
    return response
