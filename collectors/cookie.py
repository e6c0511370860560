"""The first-party ``dmp_uid`` cookie: read it, issue it, drop it; and the uid's echo.

Where the browser does not send the cookie back (dmp on another site than the page), the
tag keeps the uid dmp answered in ``ECHO_HEADER`` in a cookie of the page's own site and
sends it with each beacon (collectors.tag): the same token, checked by ``UID``.
"""

from __future__ import annotations

import re
import secrets
import time
from email.utils import formatdate

NAME = "dmp_uid"
MAX_AGE = 60 * 60 * 24 * 395  # 13 months, the longest German regulators accept
UID = "[A-Za-z0-9_-]{16,64}"  # what a uid is (new_uid makes 22 characters of these)
ECHO_HEADER = "Dmp-Uid"  # the tag's answer header naming the uid in force (analytics only)
_IN_HEADER = re.compile(rf"(?:^|[;,]\s*){NAME}=({UID})(?=\s*(?:[;,]|$))")


def read_uid(cookie_header: str) -> str:
    """Return the dmp_uid value of a Cookie header if it is well-formed, else ''.

    Read straight from the header: parsing every cookie of the site's domain costs a
    pixel hit more than the rest of its request handling.
    """
    found = _IN_HEADER.search(cookie_header)
    return found.group(1) if found else ""


def new_uid() -> str:
    """Return a fresh random browser id (128 bits)."""
    return secrets.token_urlsafe(16)


def set_value(uid: str, *, secure: bool, domain: str = "") -> str:
    """Return the Set-Cookie value that sets (or renews for 13 months) the dmp_uid cookie.

    Written by hand (the value is a checked token): werkzeug's general cookie writer costs
    a tenth of a pixel hit.
    """
    return f"{NAME}={uid}; Expires={_expires()}; Max-Age={MAX_AGE}; {_attributes(secure, domain)}"


def drop_value(*, secure: bool, domain: str = "") -> str:
    """Return the Set-Cookie value that expires the dmp_uid cookie (consent was withdrawn)."""
    return (
        f"{NAME}=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; {_attributes(secure, domain)}"
    )


def _attributes(secure: bool, domain: str) -> str:
    attrs = "HttpOnly; Path=/; SameSite=Lax"
    if domain:
        attrs += f"; Domain={domain}"
    return attrs + "; Secure" if secure else attrs


def _expires() -> str:
    now = int(time.time())
    if _EXPIRES[0] != now:
        _EXPIRES[:] = [now, formatdate(now + MAX_AGE, usegmt=True)]
    return _EXPIRES[1]  # type: ignore[return-value]


_EXPIRES: list[int | str] = [0, ""]  # (second, Expires date) of the last cookie set
