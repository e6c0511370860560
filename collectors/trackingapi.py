"""The Segment-spec HTTP tracking API: ``POST /v1/{identify,track,page,screen,group,alias,batch}``.

Spoken by Segment's and RudderStack's server SDKs, and by analytics.js 2.0 in browsers,
which uses the short paths ``/v1/i|t|p|s|g|a`` and, batching, ``/v1/b`` (same handling as
the long ones; its settings come from :mod:`collectors.sdksettings`). Auth is a key as
Basic-auth user (or ``writeKey`` in the body): a site's server key (secret; what it sends
is trusted) or its public write key (what browsers send: a claim, see dmp.people.claims).
A batch is stored whole or not at all. Each message is checked and made a hit by
:mod:`collectors.segmentmessages`.

Browsers: a request with an ``Origin`` header comes from a page. The public write key is
taken only from pages of its site's domains (another origin: 403 ``origin_not_allowed``,
logged and counted, :mod:`collectors.refusals`); a server key never from a page (403
``server_key_in_page``: the secret is out, and a page's claims must not become trusted).
Every answer to a page, refusals included, carries the CORS headers that let it read the
answer, so the SDK sees its successes (it resends what it cannot read) and the console
shows a refusal's reason. CORS preflights (analytics.js sends ``Authorization`` and
``Content-Type: text/plain``) are answered for origins that belong to some site.

Channel: the key kind and the request tell it, not the message. A server key's events are
``server``; the public write key's from a page (an ``Origin``) are ``browser``; without an
``Origin`` the message's own ``channel`` is kept when it is one of Segment's (``browser``,
``mobile``, ``server``: a mobile app using the public key says ``mobile``), else ``server``.
"""

from __future__ import annotations

from typing import Any

import redis
from flask import Blueprint, Request, Response, jsonify, request

from collectors import browser, refusals
from collectors.payload import Payload, read_body
from collectors.segmentmessages import (
    MESSAGE,
    TIME,
    TYPES,
    parse_time,
    to_hit,
    with_batch_context,
)
from dmp.access.sites import Caller
from dmp.ingest import stream
from dmp.records import Hit
from dmp.storage import metrics
from dmp.web.deps import Deps, current_deps
from dmp.web.params import Param
from dmp.web.problems import Problem, unavailable
from dmp.web.schema import Free, ListOf, Obj, Text
from dmp.web.spec import RATE_LIMITED, UNAVAILABLE, Reply, describe, problem

bp = Blueprint("trackingapi", __name__, url_prefix="/v1")

SHORT = {kind[0]: kind for kind in TYPES}  # analytics.js 2.0 posts to /v1/<first letter>
COLLECTOR = "api"  # dmp_hits_total's collector label (analytics.js's settings too)
SERVER_KEY_IN_PAGE = "server_key_in_page"  # dmp_hits_total's outcome for that refusal
PREFLIGHT_MAX_AGE = 7200  # Chromium caches a preflight for at most two hours

_WRITE_KEY = Free({"type": "string"}, "The write key, if not sent as the Basic-auth user.")
CALL = Payload(
    Obj({**MESSAGE.fields, "writeKey": _WRITE_KEY}, description=MESSAGE.description),
    ("application/json", "text/plain"),  # analytics.js 2.0 sends its JSON as text/plain
    "One message (at most DMP_MAX_EVENT_BYTES).",
    example={
        "userId": "u-42",
        "event": "Whitepaper Downloaded",
        "properties": {"title": "CRM guide", "url": "https://example.com/crm"},
        "traits": {"email": "anna@example.com"},
        "context": {"consent": {"categoryPreferences": {"analytics": True, "email": True}}},
        "timestamp": "2025-09-10T09:41:00Z",
    },
)
BATCH = Payload(
    Obj(
        {
            # Each message is checked by to_hit, after its size and with the batch's context.
            "batch": ListOf(Free(MESSAGE.schema()), message="expected a list of messages"),
            "context": Obj(nullable=True, description="Under each message's own context."),
            "sentAt": TIME,
            "writeKey": _WRITE_KEY,
        },
        required=("batch",),
    ),
    ("application/json", "text/plain"),
    "Messages stored all together or not at all (at most DMP_MAX_BATCH_BYTES).",
    example={
        "batch": [
            {"type": "identify", "userId": "u-42", "traits": {"email": "anna@example.com"}},
            {"type": "track", "userId": "u-42", "event": "Signed Up"},
        ],
        "sentAt": "2025-09-10T09:41:01Z",
    },
)
KIND = Param(
    "kind",
    Text(enum=TYPES + tuple(SHORT)),
    "path",
    message="no endpoint /v1/{value}",
    status=404,
    description="The message's type, or its first letter (as analytics.js 2.0 sends it).",
)
ORIGIN = Param("Origin", Text(), "header", description="The page's origin (browsers send it).")
_READABLE = {"Access-Control-Allow-Origin": "The page's origin, when it sent one."}
REPLIES = {
    200: Reply(
        "Stored.",
        schema=Obj({"success": Free({"const": True})}, required=("success",)),
        headers=_READABLE,
    ),
    400: problem("The body is not a Segment message (or too large); the detail names the path."),
    401: problem("No site's write key or server key."),
    403: problem("A page sent a server key, or the write key of another site than its own."),
    413: problem("The body is larger than the largest batch."),
    429: RATE_LIMITED,
    503: UNAVAILABLE,
}
SECURITY = ("serverKey", "writeKey", "")  # "": the key as writeKey in the body


def write_key_of(req: Request, body: dict[str, Any]) -> str:
    """Return the write key from Basic auth (user part) or the body's ``writeKey``."""
    if req.authorization is not None and req.authorization.type == "basic":
        return req.authorization.username or ""
    key = body.get("writeKey")
    # Write keys are ASCII tokens; anything else (a lone surrogate, say) cannot be hashed.
    return key if isinstance(key, str) and key.isascii() else ""


def check_origin(deps: Deps, caller: Caller, origin: str) -> None:
    """Raise the 403 problem (counted) for a request a page may not send: a server key from
    any page, the public write key from a page not of its site's domains."""
    if not origin:
        return  # no browser: a server SDK or an app
    if caller.trusted:
        refusals.count(deps, COLLECTOR, SERVER_KEY_IN_PAGE)
        raise Problem(
            403,
            "Server key in a page",
            "a server key is a secret and must never be in a web page: send the site's "
            "public write key from pages (and replace the server key, it is exposed)",
            "server-key-in-page",
        )
    if not caller.site.allows_origin(origin):
        raise refusals.origin_refused(deps, COLLECTOR, caller.site, origin)


def _accept(kind: str | None, origin: str) -> Response:
    deps = current_deps()
    try:
        hits = _read_hits(deps, kind, origin)
    except Problem as exc:
        if exc.code == 400:
            refusals.count(deps, COLLECTOR, refusals.BAD_INPUT)
        raise
    counters = {metrics.hits_counter(COLLECTOR, refusals.OK): len(hits)}
    try:
        stream.enqueue(
            deps.redis, hits, counters, atomic=True, partitions=deps.config.stream_partitions
        )
    except redis.RedisError:
        # Server-side clients retry (Segment's libraries on 5xx): nothing is spooled here.
        raise unavailable() from None
    return jsonify(success=True)


def _read_hits(deps: Deps, kind: str | None, origin: str) -> list[Hit]:
    """Return the hits of the request's call (``kind``) or batch (None), or raise a Problem."""
    cfg = deps.config
    body = read_body(request, cfg.max_batch_bytes if kind is None else cfg.max_event_bytes)
    try:
        caller = deps.sites.caller_of(write_key_of(request, body))
    except redis.RedisError:
        raise unavailable() from None
    if caller is None:
        refusals.count(deps, COLLECTOR, refusals.UNKNOWN_KEY)
        raise Problem(
            401,
            "Unknown write key",
            "send the site's server key (or its public write key) as the Basic-auth user",
            "unauthorized",
        )
    check_origin(deps, caller, origin)
    try:
        deps.limits.check(request.remote_addr or "", caller.site.site_id)
    except Problem:
        refusals.count(deps, COLLECTOR, refusals.RATE_LIMITED)
        raise
    received = browser.now_ms()
    if kind is not None:
        return [to_hit(body, kind, caller, received, None, kind, cfg.max_event_bytes, origin)]
    body = BATCH.check(body)
    sent_at = parse_time(body.get("sentAt"), "sentAt")
    messages = with_batch_context(body["batch"], body.get("context") or {})
    limit = cfg.max_event_bytes
    return [
        to_hit(m, None, caller, received, sent_at, f"batch[{i}]", limit, origin)
        for i, m in enumerate(messages)
    ]


# Preflights have views of their own (below): Flask's automatic OPTIONS answers without CORS.
@bp.post("/batch", provide_automatic_options=False)
@bp.post("/import", provide_automatic_options=False)
@bp.post("/b", provide_automatic_options=False)
@describe(tag="collect", params=(ORIGIN,), body=BATCH, security=SECURITY, replies=REPLIES)
def batch(Origin: str | None) -> Response:  # the header's name
    """Accept a batch of messages (what segment-analytics-python sends, and analytics.js
    2.0 when batching)."""
    return _accept(None, Origin or "")


@bp.post("/<kind>", provide_automatic_options=False)
@describe(
    tag="collect",
    params=(KIND, ORIGIN),
    body=CALL,
    security=SECURITY,
    replies={**REPLIES, 404: problem("No such call: the path names none of the types.")},
)
def single(kind: str, Origin: str | None) -> Response:  # the header's name
    """Accept one identify, track, page, screen, group or alias call (or i, t, p, s, g, a)."""
    return _accept(SHORT.get(kind, kind), Origin or "")


PREFLIGHT = {
    204: Reply(
        "The page's origin may send calls.",
        None,
        headers={
            "Access-Control-Allow-Origin": "The origin asked for.",
            "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Retry-Count.",
        },
    ),
    403: problem("The origin belongs to no site."),
    503: UNAVAILABLE,
}


@bp.route("/batch", methods=["OPTIONS"])
@bp.route("/import", methods=["OPTIONS"])
@bp.route("/b", methods=["OPTIONS"])
@describe(tag="collect", params=(ORIGIN,), replies=PREFLIGHT)
def batch_preflight(Origin: str | None) -> Response:  # the header's name
    """Answer a browser's CORS preflight of a batch, for origins that belong to some site."""
    return _preflight(Origin or "")


@bp.route("/<kind>", methods=["OPTIONS"])
@describe(
    tag="collect",
    params=(KIND, ORIGIN),
    replies={**PREFLIGHT, 404: problem("No such call: the path names none of the types.")},
)
def call_preflight(kind: str, Origin: str | None) -> Response:  # noqa: ARG001
    """Answer a browser's CORS preflight of a call, for origins that belong to some site."""
    return _preflight(Origin or "")


def _preflight(origin: str) -> Response:
    """Return the 204 that lets a page of ``origin`` post with a key (the key itself is
    checked on the post); a 403 problem for an origin that belongs to no site."""
    return refusals.preflight(
        current_deps(),
        origin,
        "POST, GET, OPTIONS",
        "Authorization, Content-Type, X-Retry-Count",
        PREFLIGHT_MAX_AGE,
    )


@bp.after_request
def for_pages(response: Response) -> Response:
    """Return the answer readable by the page that sent the request (refusals too: the
    problem holds nothing the page did not send)."""
    return refusals.readable(response, request.headers.get("Origin", ""))
