"""The first-party ``dmp_uid`` cookie: read it, issue it, drop it."""

from __future__ import annotations

import re
import secrets
import time
from email.utils import formatdate

from flask import Request, Response

NAME = "dmp_uid"
MAX_AGE = 60 * 60 * 24 * 395  # 13 months, the longest German regulators accept
_IN_HEADER = re.compile(r"(?:^|[;,]\s*)dmp_uid=([A-Za-z0-9_-]{16,64})(?=\s*(?:[;,]|$))")


def read_uid(request: Request) -> str:
    """Return the request's dmp_uid cookie if it is well-formed, else ''.

    Read straight from the header: parsing every cookie of the site's domain costs a
    pixel hit more than the rest of its request handling.
    """
    found = _IN_HEADER.search(request.headers.get("Cookie", ""))
    return found.group(1) if found else ""


def new_uid() -> str:
    """Return a fresh random browser id (128 bits)."""
    return secrets.token_urlsafe(16)


def set_uid(response: Response, uid: str, *, secure: bool, domain: str = "") -> None:
    """Set (or renew for another 13 months) the dmp_uid cookie on ``response``.

    Written by hand (the value is a checked token): werkzeug's general cookie writer costs
    a tenth of a pixel hit.
    """
    attrs = f"; Domain={domain}" if domain else ""
    if secure:
        attrs += "; Secure"
    response.headers.add(
        "Set-Cookie",
        f"{NAME}={uid}; Expires={_expires()}; Max-Age={MAX_AGE}; HttpOnly; Path=/; "
        f"SameSite=Lax{attrs}",
    )


def _expires() -> str:
    now = int(time.time())
    if _EXPIRES[0] != now:
        _EXPIRES[:] = [now, formatdate(now + MAX_AGE, usegmt=True)]
    return _EXPIRES[1]  # type: ignore[return-value]


_EXPIRES: list[int | str] = [0, ""]  # (second, Expires date) of the last cookie set


def drop_uid(response: Response, *, secure: bool, domain: str = "") -> None:
    """Expire the dmp_uid cookie (consent was withdrawn)."""
    response.delete_cookie(
        NAME, path="/", domain=domain or None, secure=secure, httponly=True, samesite="Lax"
    )
