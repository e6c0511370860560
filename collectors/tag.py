"""The JS tag: ``GET /dmp.js`` and its beacons to ``POST /collect``.

A beacon body (JSON of at most 64 KB; sent as ``text/plain`` so that no CORS preflight is
needed)::

    {"k": "<write key>", "consent": ["analytics", "ads"], "sentAt": <ms>,
     "events": [{"id": "<client event id>", "type": "page|track|identify", "event": "...",
                 "ts": <ms>, "url": "...", "ref": "...", "title": "...", "topics": [...],
                 "props": {...}, "traits": {...}}]}

Only ``k`` and ``events`` (1 to 50 objects) are required; every event field is optional
(``type`` defaults to ``page``). Times are ms since the epoch; an event's time is corrected
for the browser's clock skew (received − (sentAt − ts)) and kept within the last day.
``url``, ``ref``, ``title`` and ``topics`` are cleaned like the pixel's (a non-http URL or a
non-string is dropped); any other wrong type, an ``id`` outside 8 to 64 characters included,
refuses the whole beacon with a 400 problem: nothing is stored.

The consent list holds the categories the page granted when its events happened; the tag
sends a ``track`` event named ``consent`` whenever it changes. Without ``analytics`` the
events only count in aggregate and ``traits`` are dropped. CORS is granted only to the
write key's site domains; a beacon from any other origin is refused whole. The ``dmp_uid``
cookie follows the same consent rules as the pixel's.
"""

from __future__ import annotations

import uuid
from importlib import resources
from typing import Any

import redis
from flask import Blueprint, Response, request

from collectors import browser
from collectors.consent import version_of as consent_version_of
from collectors.payload import expect_object, invalid, read_body
from dmp.access.sites import Site
from dmp.records import Hit, Source
from dmp.storage import metrics
from dmp.web.deps import current_deps
from dmp.web.problems import Problem, unavailable

bp = Blueprint("tag", __name__)

MAX_BODY = 64 * 1024
MAX_EVENTS = 50
MAX_MS = 2**53  # JavaScript's largest exact integer: no real time is near it
MAX_AGE_MS = 24 * 3600 * 1000  # the tag sends within seconds; older times are skew or lies
TYPES = ("page", "track", "identify")
_SCRIPT = resources.files("collectors").joinpath("static/dmp.js").read_bytes()


@bp.get("/dmp.js")
def script() -> Response:
    """Return the tag script (cacheable for an hour)."""
    return Response(
        _SCRIPT,
        mimetype="application/javascript",
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


def _cors(response: Response, origin: str) -> Response:
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Allow-Credentials"] = "true"
    response.headers["Vary"] = "Origin"
    return response


@bp.route("/collect", methods=["OPTIONS"])
def preflight() -> Response:
    """Answer a CORS preflight for origins that belong to some site."""
    origin = request.headers.get("Origin", "")
    if not origin or not current_deps().sites.any_allows_origin(origin):
        raise Problem(403, "Origin not allowed", "this origin belongs to no site", "forbidden")
    response = _cors(Response(status=204), origin)
    response.headers["Access-Control-Allow-Methods"] = "POST"
    response.headers["Access-Control-Allow-Headers"] = "Content-Type"
    response.headers["Access-Control-Max-Age"] = "86400"
    return response


def _ms(value: Any, path: str) -> int | None:
    if value is None:
        return None
    # The negated range test also refuses NaN, which Python's JSON parser lets through.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < MAX_MS:
        raise invalid(f"{path}: expected ms since the epoch")
    return int(value)


def corrected_time(received: int, sent: int | None, client_ts: int | None) -> int:
    """Return an event's time corrected for clock skew, within the day before ``received``."""
    if not sent or not client_ts:
        return received
    return min(received, max(received - MAX_AGE_MS, received - (sent - client_ts)))


def to_hit(
    item: Any, site: Site, visitor: browser.Visitor, received: int, sent: int | None, i: int
) -> Hit:
    """Return the Hit of one beacon event, or raise a 400 Problem naming the event."""
    path = f"events[{i}]"
    if not isinstance(item, dict):
        raise invalid(f"{path}: expected an object")
    kind = item.get("type", "page")
    if kind not in TYPES:
        raise invalid(f"{path}.type: expected one of {', '.join(TYPES)}")
    try:
        event = browser.clean_event_name(item.get("event"), default=kind)
    except browser.BadHit as exc:
        raise invalid(f"{path}.event: {exc}") from None
    client_ts = _ms(item.get("ts"), f"{path}.ts")
    event_id = item.get("id")
    if event_id is None:
        event_id = uuid.uuid4().hex
    elif not isinstance(event_id, str) or not 8 <= len(event_id) <= 64:
        raise invalid(f"{path}.id: expected a string of 8 to 64 characters")
    traits = expect_object(item.get("traits"), f"{path}.traits")
    # Without analytics consent nothing may identify the visitor, an email least of all.
    return Hit(
        event_id=event_id,
        site_id=site.site_id,
        source=Source.TAG.value,
        type=kind,
        event=event,
        received_at=received,
        timestamp=corrected_time(received, sent, client_ts),
        consent=visitor.consent,
        uid=visitor.uid,
        url=browser.clean_url(item.get("url"), site.keep_params),
        referrer=browser.clean_url(item.get("ref"), site.keep_params),
        title=browser.clean_title(item.get("title")),
        topics=browser.clean_topics(item.get("topics")),
        properties=expect_object(item.get("props"), f"{path}.props"),
        traits=traits if visitor.identified else {},
        ip=visitor.ip,
        user_agent=visitor.user_agent,
        consent_version=visitor.consent_version,
    )


@bp.post("/collect")
def collect() -> Response:
    """Accept a tag beacon of up to 50 events, stored all together or not at all."""
    deps = current_deps()
    origin = request.headers.get("Origin", "")
    body = read_body(request, MAX_BODY)
    key = body.get("k")
    try:
        site = deps.sites.site_for_key(key if isinstance(key, str) else "")
    except redis.RedisError:  # Redis away and the key not cached: the origin is unknown
        raise unavailable() from None
    if site is None:
        raise Problem(401, "Unknown write key", "the beacon's k is no site's write key")
    if origin and not site.allows_origin(origin):
        raise Problem(403, "Origin not allowed", f"{origin} is not a domain of this site")
    try:
        deps.limits.check(request.remote_addr or "", site.site_id)
    except Problem:
        deps.appender.count({metrics.hits_counter("tag", "rate_limited"): 1})
        raise
    events = body.get("events")
    if not isinstance(events, list) or not 1 <= len(events) <= MAX_EVENTS:
        raise invalid(f"events: expected a list of 1 to {MAX_EVENTS} events")
    granted = body.get("consent", [])
    if not isinstance(granted, list) or not all(isinstance(c, str) for c in granted):
        raise invalid("consent: expected a list of category names")
    version = consent_version_of(body.get("cv"), body.get("gdpr_consent", ""))
    visitor = browser.read_visitor(request, ",".join(granted), version)
    received = browser.now_ms()
    sent = _ms(body.get("sentAt"), "sentAt")
    hits = [to_hit(item, site, visitor, received, sent, i) for i, item in enumerate(events)]
    withdrawal = browser.withdrawal_hit(visitor, site.site_id, Source.TAG, received)
    if withdrawal:
        hits.append(withdrawal)
    counter = metrics.hits_counter("tag", "ok")
    if not deps.appender.append_atomic(hits, {counter: len(events)}):
        raise unavailable()
    response = Response(status=204)
    browser.finish_response(response, visitor, request, deps.config.cookie_domain)
    return _cors(response, origin) if origin else response
