"""RFC 9457 problem details: every JSON endpoint's error answer."""

from __future__ import annotations

from flask import Response, json
from werkzeug.exceptions import HTTPException

TYPE_BASE = "https://dmp.dev/problems/"
# Answers that may carry personal data (and every error) are neither cached nor sniffed.
PRIVATE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class Problem(HTTPException):
    """An error answered as ``application/problem+json``."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        slug: str = "",
        extra: dict | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(description=detail)
        self.headers = headers or {}
        self.code = status
        self.title = title
        self.detail = detail
        self.slug = slug or title.lower().replace(" ", "-")
        self.extra = extra or {}  # extension members, e.g. the invalid items of a batch

    def get_response(self, environ=None, scope=None) -> Response:  # noqa: ARG002
        """Return the problem as an application/problem+json response."""
        response = problem_response(self.code, self.title, self.detail, self.slug, self.extra)
        response.headers.update(self.headers)
        return response


RETRY_AFTER_SECONDS = 5  # what a 503 tells clients to wait: Redis restarts within that


def unavailable() -> Problem:
    """Return the 503 problem for a request that needs Redis while it is away."""
    return Problem(
        503,
        "Unavailable",
        "the data store is unavailable; retry later",
        "unavailable",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def problem_response(
    status: int, title: str, detail: str = "", slug: str = "", extra: dict | None = None
) -> Response:
    """Return a problem+json response (``extra`` adds extension members)."""
    body = {
        **(extra or {}),
        "type": TYPE_BASE + (slug or title.lower().replace(" ", "-")),
        "title": title,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    return Response(
        json.dumps(body), status=status, mimetype="application/problem+json", headers=PRIVATE
    )


def from_http_exception(exc: HTTPException) -> Response:
    """Return werkzeug's HTTP errors (404, 405, 413 …) as problem+json."""
    if isinstance(exc, Problem):
        return exc.get_response()
    return problem_response(exc.code or 500, exc.name, exc.description or "")
