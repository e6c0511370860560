"""What pixel and tag share: a browser hit's site, consent, cookie and network facts."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Request, Response

from collectors import consent as consent_rules
from collectors import cookie
from collectors.enrichment import truncate_ip
from collectors.redaction import redact_text, redact_url
from dmp.records import Hit, Source

EVENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\- ]{0,63}$")
TOPIC = re.compile(r"[^\w\- ]+")  # letters of any script: "künstliche intelligenz"
MAX_URL = 2048
MAX_TITLE = 512
MAX_TOPICS = 20


class BadHit(ValueError):
    """A hit that cannot be stored; the message says why (for metrics and API errors)."""


@dataclass(slots=True)
class Visitor:
    """The browser behind one request: consent, cookie and truncated network facts."""

    consent: dict[str, bool]
    uid: str = ""  # set only with analytics consent
    new_uid: bool = False
    withdrawn_uid: str = ""  # a uid that came without analytics consent: to be forgotten
    ip: str = ""
    user_agent: str = ""
    consent_version: str = ""  # the consent text version or TC string hash (its proof)
    extra: list[Hit] = field(default_factory=list)
    cookie_not_returned: bool = False  # the uid is the page's copy: dmp's cookie did not come

    @property
    def identified(self) -> bool:
        """Return whether the hit may carry an identifier (analytics consent given)."""
        return bool(self.uid)


def visitor_of(
    environ: Mapping[str, Any], consent: dict[str, bool], version: str = "", held_uid: str = ""
) -> Visitor:
    """Return the visitor of a WSGI request whose page gave ``consent`` (every category's
    state, see collectors.consent.page_consent) under the proof ``version``.

    ``held_uid`` is the uid the page's tag kept for dmp (its origin checked by the caller):
    it is the visitor's only when dmp's own cookie did not come back, and only with
    analytics consent; without it, it is forgotten as a withdrawn cookie would be.
    """
    signals = {
        "Sec-GPC": environ.get("HTTP_SEC_GPC", ""),
        "DNT": environ.get("HTTP_DNT", ""),
    }
    consent = consent_rules.apply_browser_signals(consent, signals)
    ua = environ.get("HTTP_USER_AGENT", "")[:512]
    existing = cookie.read_uid(environ.get("HTTP_COOKIE", ""))
    if consent["analytics"]:
        uid = existing or held_uid or cookie.new_uid()
        ip = truncate_ip(environ.get("REMOTE_ADDR") or "")
        held = not existing and bool(held_uid)
        return Visitor(consent, uid, not existing, "", ip, ua, version, cookie_not_returned=held)
    # No analytics consent: no identifier and no IP; the UA only lets the worker skip bots.
    withdrawn = existing or held_uid
    return Visitor(consent, withdrawn_uid=withdrawn, user_agent=ua, consent_version=version)


def cookie_header(visitor: Visitor, environ: Mapping[str, Any], cookie_domain: str) -> str:
    """Return the Set-Cookie value that sets, renews or drops dmp_uid; '' if none is due."""
    secure = environ.get("wsgi.url_scheme") == "https"
    if visitor.uid:
        return cookie.set_value(visitor.uid, secure=secure, domain=cookie_domain)
    if visitor.withdrawn_uid:
        return cookie.drop_value(secure=secure, domain=cookie_domain)
    return ""


def finish_response(
    response: Response, visitor: Visitor, request: Request, cookie_domain: str
) -> Response:
    """Set, renew or drop the dmp_uid cookie on ``response`` as the visitor's consent says."""
    value = cookie_header(visitor, request.environ, cookie_domain)
    if value:
        response.headers.add("Set-Cookie", value)
    return response


def withdrawal_hit(visitor: Visitor, site_id: str, source: Source, now_ms: int) -> Hit | None:
    """Return the hit telling the worker a cookie's owner withdrew consent, if one did."""
    if not visitor.withdrawn_uid:
        return None
    return Hit(
        event_id=uuid.uuid4().hex,
        site_id=site_id,
        source=source.value,
        type="consent",
        event="consent_withdrawn",
        received_at=now_ms,
        timestamp=now_ms,
        consent=visitor.consent,
        uid=visitor.withdrawn_uid,
        consent_version=visitor.consent_version,
    )


def clean_event_name(name: str | None, default: str = "page") -> str:
    """Return a valid event name or raise BadHit."""
    if name is None or name == "":
        return default
    if not isinstance(name, str) or not EVENT_NAME.match(name):
        raise BadHit("event name must be 1-64 letters, digits, spaces or _.:-")
    return name


def clean_url(value: object, keep: frozenset[str] = frozenset()) -> str:
    """Return an http(s) URL cut to 2 KB and minimised (:func:`redact_url`: ``utm_*`` and
    the ``keep`` parameters stay), or '' for anything else."""
    if not isinstance(value, str) or not value[:8].lower().startswith(("http://", "https://")):
        return ""
    return redact_url(value[:MAX_URL], keep)


def clean_title(value: object) -> str:
    """Return a page title cut to its limit, emails and tokens in it redacted."""
    return redact_text(clean_text(value))


def clean_text(value: object, limit: int = MAX_TITLE) -> str:
    """Return a string cut to ``limit`` characters, or '' for non-strings."""
    return value[:limit] if isinstance(value, str) else ""


def clean_topics(value: object) -> list[str]:
    """Return normalised content topics from a comma string or a list."""
    if isinstance(value, str):
        parts = value.split(",")
    elif isinstance(value, list):
        parts = [p for p in value if isinstance(p, str)]
    else:
        return []
    topics = []
    for part in parts[: MAX_TOPICS * 2]:
        topic = " ".join(TOPIC.sub("", part.lower()).split())[:64].strip()
        if topic and topic not in topics:
            topics.append(topic)
    return topics[:MAX_TOPICS]


def now_ms() -> int:
    """Return the current time in ms since the epoch."""
    return time.time_ns() // 1_000_000
