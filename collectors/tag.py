"""The JS tag: ``GET /dmp.js`` and its beacons to ``POST /collect``.

A beacon body (JSON of at most 64 KB; sent as ``text/plain`` so that no CORS preflight is
needed)::

    {"k": "<write key>", "consent": ["analytics", "ads"], "sentAt": <ms>,
     "u": "<uid the tag kept>", "gdpr_consent": "<TC string>",
     "events": [{"id": "<client event id>", "type": "page|track|identify", "event": "...",
                 "ts": <ms>, "url": "...", "ref": "...", "title": "...", "topics": [...],
                 "props": {...}, "traits": {...}}]}

Only ``k`` and ``events`` (1 to 50 objects) are required; every event field is optional
(``type`` defaults to ``page``). Times are ms since the epoch; an event's time is corrected
for the browser's clock skew (received − (sentAt − ts)) and kept within the last day.
``url``, ``ref``, ``title`` and ``topics`` are cleaned like the pixel's (a non-http URL or a
non-string is dropped); any other wrong type, an ``id`` outside 8 to 64 characters or a
``u`` that is no uid included, refuses the whole beacon with a 400 problem: nothing is
stored.

Consent. The tag takes it from the page's IAB TCF v2.2 CMP first, then from Google Consent
Mode v2, then from the page's own ``dmp.consent([...])`` (the first present wins; see
docs/embedding.md); it serves with the site's TCF purpose rules filled in
(collectors.tcfpurposes, one place). A beacon that carries a TC string (``gdpr_consent``)
is decided by that string here (collectors.tcstring: an undecodable one grants nothing),
and its proof is the CMP id and the string's hash; otherwise the ``consent`` list (and
``cv``, the consent text's version) holds the categories the page granted when its events
happened. The tag sends a ``track`` event named ``consent`` whenever they change. Without
``analytics`` the events only count in aggregate and ``traits`` are dropped.

Identity. The ``dmp_uid`` cookie follows the same consent rules as the pixel's; with
analytics consent the answer names the uid in force in ``Dmp-Uid`` (readable by the page).
When dmp runs on another site than the page, the browser never sends that cookie back: the
tag keeps the uid in a cookie of the page's own site and sends it as ``u``. A cookie that
came back wins; else ``u`` is the visitor's uid, taken only from a request whose Origin is
one of the key's site's domains and only with analytics consent (counted in
``dmp_cookie_not_returned_total``); without analytics consent a ``u`` is forgotten as a
withdrawn cookie is (the tag sends it once, as consent is withdrawn).

Refusals. CORS is granted only to the write key's site domains; a beacon from any other
origin is refused whole. Every answer of /collect, refusals included, carries the CORS
headers for the request's origin, so the page (and its console) can read the problem;
refusals are counted in ``dmp_hits_total{collector="tag"}`` by outcome (collectors.refusals).
"""

from __future__ import annotations

import gzip
import uuid
from functools import lru_cache
from importlib import resources
from typing import Any

import redis
from flask import Blueprint, Response, request

from collectors import browser, cookie, refusals, tcfpurposes, tcstring
from collectors.consent import page_consent
from collectors.payload import Payload, invalid, read_body
from dmp.access.sites import Site
from dmp.records import Hit, Source
from dmp.storage import metrics
from dmp.web.deps import Deps, current_deps
from dmp.web.params import Param
from dmp.web.problems import Problem, unavailable
from dmp.web.schema import Free, ListOf, Number, Obj, Text
from dmp.web.spec import RATE_LIMITED, UNAVAILABLE, Reply, describe, problem

bp = Blueprint("tag", __name__)

COLLECTOR = "tag"  # dmp_hits_total's collector label
MAX_BODY = 64 * 1024
MAX_EVENTS = 50
MAX_MS = 2**53  # JavaScript's largest exact integer: no real time is near it
MAX_AGE_MS = 24 * 3600 * 1000  # the tag sends within seconds; older times are skew or lies
TYPES = ("page", "track", "identify")
RULES_PLACEHOLDER = "__DMP_TCF_RULES__"  # where dmp.js takes the site's TCF purpose rules
_SOURCE = resources.files("collectors").joinpath("static/dmp.js").read_text(encoding="utf-8")
NOT_RETURNED = "dmp_cookie_not_returned_total"

# What a beacon holds, checked by to_hit and collect (and described in the OpenAPI document).
_MS = Number(0, MAX_MS, nullable=True, message="expected ms since the epoch")
_TEXT = Free({"type": "string"}, "Kept if a string (URLs: http and https only), else dropped.")
EVENT = Obj(
    {
        "id": Text(
            min_length=8,
            max_length=64,
            nullable=True,
            message="expected a string of 8 to 64 characters",
            description="The client's event id: a retry with the same id is stored once.",
        ),
        "type": Text(enum=TYPES, description="page by default."),
        "event": Text(
            pattern=f"(?:{browser.EVENT_NAME.pattern.strip('^$')})?",
            nullable=True,
            description="The event's name (the type by default).",
        ),
        "ts": _MS,
        "url": _TEXT,
        "ref": _TEXT,
        "title": _TEXT,
        "topics": Free({"type": ["array", "string"]}, "A list, or a comma-separated string."),
        "props": Obj(nullable=True),
        "traits": Obj(nullable=True, description="Dropped without the analytics consent."),
    }
)
BEACON = Payload(
    Obj(
        {
            "k": Free({"type": "string"}, "The site's write key."),
            "events": ListOf(
                EVENT, 1, MAX_EVENTS, message=f"expected a list of 1 to {MAX_EVENTS} events"
            ),
            "consent": ListOf(Text(), message="expected a list of category names"),
            "sentAt": _MS,
            "cv": Free({"type": "string"}, "The consent text's version."),
            "gdpr_consent": Text(
                max_length=tcstring.MAX_LENGTH,
                nullable=True,
                description="The IAB TCF TC string in force: when present it decides the "
                "consent (the list is ignored) and its proof (CMP id and hash); an "
                "undecodable one grants nothing.",
            ),
            "u": Text(
                pattern=cookie.UID,
                nullable=True,
                message="expected a uid as dmp answers it in Dmp-Uid",
                description="The uid the tag kept in a cookie of the page's own site (from "
                "dmp's Dmp-Uid answer). Used when dmp's cookie did not come back, only "
                "from an Origin of the key's site and with analytics consent; without "
                "it, the uid is forgotten (consent withdrawn). No Origin: ignored.",
            ),
        },
        required=("k", "events"),
    ),
    ("application/json", "text/plain"),
    f"A beacon of 1 to {MAX_EVENTS} events (at most {MAX_BODY} bytes; gzip taken).",
    {
        "k": "wk_…",
        "consent": ["analytics", "ads"],
        "sentAt": 1757494860000,
        "events": [
            {
                "id": "ev-000000001",
                "type": "page",
                "url": "https://example.com/crm",
                "title": "CRM",
                "topics": ["crm"],
                "ts": 1757494859000,
            },
            {"type": "identify", "traits": {"email": "anna@example.com"}},
        ],
    },
)
ORIGIN = Param("Origin", Text(), "header", description="The page's origin.")


@bp.get("/dmp.js")
@describe(
    tag="collect",
    replies={
        200: Reply(
            "The tag script, with the site's TCF purpose rules (gzipped when accepted).",
            "application/javascript",
            {"type": "string"},
            {"Cache-Control": "public, max-age=3600"},
        )
    },
)
def script() -> Response:
    """Return the tag script with the TCF purpose rules of the settings filled in
    (cacheable for an hour; gzipped for a client that accepts it)."""
    plain, zipped = built_script(tcfpurposes.of_config(current_deps().config).for_tag())
    headers = {
        "Cache-Control": "public, max-age=3600",
        "X-Content-Type-Options": "nosniff",
        "Vary": "Accept-Encoding",
    }
    body = plain
    if request.accept_encodings["gzip"] > 0:
        body = zipped
        headers["Content-Encoding"] = "gzip"
    return Response(body, mimetype="application/javascript", headers=headers)


@lru_cache(maxsize=8)
def built_script(rules: str) -> tuple[bytes, bytes]:
    """Return the served tag script, plain and gzipped, for the TCF rules JSON ``rules``:
    built once per rules, without the source's comments and indentation."""
    header_end = _SOURCE.index("*/") + 2  # the header comment: for readers of the source
    lines = (line.strip() for line in _SOURCE[header_end:].splitlines())
    kept = [line for line in lines if line and not line.startswith("//")]
    text = "/* dmp tag, docs/embedding.md */\n" + "\n".join(kept) + "\n"
    if text.count(RULES_PLACEHOLDER) != 1:
        raise RuntimeError(f"dmp.js must hold {RULES_PLACEHOLDER} once")
    plain = text.replace(RULES_PLACEHOLDER, rules).encode()
    return plain, gzip.compress(plain, mtime=0)


@bp.route("/collect", methods=["OPTIONS"])
@describe(
    tag="collect",
    params=(ORIGIN,),
    replies={
        204: Reply(
            "The origin may post beacons.",
            None,
            headers={"Access-Control-Allow-Origin": "The origin asked for."},
        ),
        403: problem("The origin belongs to no site."),
        503: problem("The data store is away; retry later."),
    },
)
def preflight(Origin: str | None) -> Response:  # the header's name
    """Answer a CORS preflight for origins that belong to some site."""
    return refusals.preflight(current_deps(), Origin or "", "POST", "Content-Type", 86400)


def readable_answer(response: Response) -> Response:
    """Return an answer of /collect with the CORS headers for the request's origin: a
    refusal too, so that the page can read (and the tag show) the problem's text."""
    if request.endpoint in (f"{bp.name}.collect", f"{bp.name}.preflight"):
        refusals.readable(response, request.headers.get("Origin", ""))
    return response


bp.after_request(readable_answer)


def corrected_time(received: int, sent: int | None, client_ts: int | None) -> int:
    """Return an event's time corrected for clock skew, within the day before ``received``."""
    if not sent or not client_ts:
        return received
    return min(received, max(received - MAX_AGE_MS, received - (sent - client_ts)))


def to_hit(
    item: Any, site: Site, visitor: browser.Visitor, received: int, sent: int | None, i: int
) -> Hit:
    """Return the Hit of one beacon event (checked by EVENT), or raise a 400 Problem
    naming the event."""
    path = f"events[{i}]"
    kind = item.get("type", "page")
    try:
        event = browser.clean_event_name(item.get("event"), default=kind)
    except browser.BadHit as exc:
        raise invalid(f"{path}.event: {exc}") from None
    ts = item.get("ts")
    client_ts = None if ts is None else int(ts)
    event_id = item.get("id") or uuid.uuid4().hex
    traits = item.get("traits") or {}
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
        properties=item.get("props") or {},
        traits=traits if visitor.identified else {},
        ip=visitor.ip,
        user_agent=visitor.user_agent,
        consent_version=visitor.consent_version,
    )


@bp.post("/collect")
@describe(
    tag="collect",
    params=(ORIGIN,),
    body=BEACON,
    replies={
        204: Reply(
            "Stored, all events together.",
            None,
            headers={
                "Dmp-Uid": "With analytics consent: the visitor's uid, for the tag to keep.",
                "Set-Cookie": "dmp_uid, with the analytics consent (removed without it).",
            },
        ),
        400: problem("The beacon is not what the tag sends; nothing was stored."),
        401: problem("k is no site's write key."),
        403: problem("The origin is not a domain of the key's site."),
        429: RATE_LIMITED,
        503: UNAVAILABLE,
    },
)
def collect(Origin: str | None) -> Response:  # the header's name
    """Accept a tag beacon of up to 50 events, stored all together or not at all."""
    deps = current_deps()
    origin = Origin or ""
    body = _counted(deps, read_body, request, MAX_BODY)
    key = body.get("k")
    try:
        site = deps.sites.site_for_key(key if isinstance(key, str) else "")
    except redis.RedisError:  # Redis away and the key not cached: the origin is unknown
        raise unavailable() from None
    if site is None:
        refusals.count(deps, COLLECTOR, refusals.UNKNOWN_KEY)
        raise Problem(401, "Unknown write key", "the beacon's k is no site's write key")
    if origin and not site.allows_origin(origin):
        raise refusals.origin_refused(deps, COLLECTOR, site, origin)
    try:
        deps.limits.check(request.remote_addr or "", site.site_id)
    except Problem:
        refusals.count(deps, COLLECTOR, refusals.RATE_LIMITED)
        raise
    body = _counted(deps, BEACON.check, body)
    events = body["events"]
    visitor = _visitor(deps, body, held_uid=(body.get("u") or "") if origin else "")
    received = browser.now_ms()
    sent = None if body.get("sentAt") is None else int(body["sentAt"])
    hits = [
        _counted(deps, to_hit, item, site, visitor, received, sent, i)
        for i, item in enumerate(events)
    ]
    withdrawal = browser.withdrawal_hit(visitor, site.site_id, Source.TAG, received)
    if withdrawal:
        hits.append(withdrawal)
    counters = {metrics.hits_counter(COLLECTOR, refusals.OK): len(events)}
    if visitor.cookie_not_returned:
        counters[metrics.counter(NOT_RETURNED, site=site.site_id)] = len(events)
    if not deps.appender.append_atomic(hits, counters):
        raise unavailable()
    response = Response(status=204)
    browser.finish_response(response, visitor, request, deps.config.cookie_domain)
    if visitor.uid:  # the tag keeps it where dmp's own cookie does not come back
        response.headers[cookie.ECHO_HEADER] = visitor.uid
        response.headers["Access-Control-Expose-Headers"] = cookie.ECHO_HEADER
    return response


def _visitor(deps: Deps, body: dict[str, Any], held_uid: str) -> browser.Visitor:
    """Return the visitor of a checked beacon: its TC string decides the consent and the
    proof when it carries one, else its consent list and consent text version."""
    consent, version = page_consent(
        ",".join(body.get("consent", [])),
        body.get("cv"),
        body.get("gdpr_consent") or "",
        "",  # a beacon's TC string is the page's CMP's: GDPR applies where it has one
        tcfpurposes.of_config(deps.config),
    )
    return browser.visitor_of(request.environ, consent, version, held_uid)


def _counted(deps: Deps, check: Any, *args: Any) -> Any:
    """Return ``check(*args)``; a 400 problem it raises is counted as bad input first."""
    try:
        return check(*args)
    except Problem as exc:
        if exc.code == 400:
            refusals.count(deps, COLLECTOR, refusals.BAD_INPUT)
        raise
