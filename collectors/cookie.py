"""The first-party ``dmp_uid`` cookie: read it, issue it, drop it."""

from __future__ import annotations

import re
import secrets

from flask import Request, Response

NAME = "dmp_uid"
MAX_AGE = 60 * 60 * 24 * 395  # 13 months, the longest German regulators accept
_VALID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def read_uid(request: Request) -> str:
    """Return the request's dmp_uid cookie if it is well-formed, else ''."""
    value = request.cookies.get(NAME, "")
    return value if _VALID.match(value) else ""


def new_uid() -> str:
    """Return a fresh random browser id (128 bits)."""
    return secrets.token_urlsafe(16)


def set_uid(response: Response, uid: str, *, secure: bool, domain: str = "") -> None:
    """Set (or renew for another 13 months) the dmp_uid cookie on ``response``."""
    response.set_cookie(
        NAME,
        uid,
        max_age=MAX_AGE,
        httponly=True,
        samesite="Lax",
        secure=secure,
        domain=domain or None,
        path="/",
    )


def drop_uid(response: Response, *, secure: bool, domain: str = "") -> None:
    """Expire the dmp_uid cookie (consent was withdrawn)."""
    response.delete_cookie(
        NAME, path="/", domain=domain or None, secure=secure, httponly=True, samesite="Lax"
    )
