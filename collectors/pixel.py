"""The tracking pixel: ``GET /p.gif`` always answers a 1x1 transparent GIF."""

from __future__ import annotations

import base64
import logging
import uuid

import redis
from flask import Blueprint, Response, request
from werkzeug.datastructures import Headers

from collectors import browser
from dmp import metrics
from dmp.deps import current_deps
from dmp.records import Hit, Source

log = logging.getLogger(__name__)
bp = Blueprint("pixel", __name__)

GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
_HEADERS = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
    "X-Content-Type-Options": "nosniff",
    "Access-Control-Allow-Origin": "*",  # the GIF itself is no secret
}


_HEADER_LIST = [("Content-Type", "image/gif"), *_HEADERS.items()]


def _gif() -> Response:
    response = Response(GIF)
    response.headers = Headers(_HEADER_LIST)  # one copy of a ready list: the cheapest way
    return response


_COUNTERS = {
    outcome: {metrics.counter("dmp_hits_total", collector="pixel", outcome=outcome): 1}
    for outcome in ("ok", "unknown_key", "bad_input")
}


def _hit_counter(outcome: str) -> dict[str, int]:
    return _COUNTERS[outcome]


@bp.get("/p.gif")
def pixel() -> Response:
    """Record one pixel hit and answer the GIF, whatever the input."""
    deps = current_deps()
    response = _gif()
    try:
        if len(request.query_string) > deps.config.max_query_bytes:
            raise browser.BadHit("query string too long")
        args = request.args
        site = deps.sites.site_for_key(args.get("k", ""))
        if site is None:
            deps.appender.append([], _hit_counter("unknown_key"))
            return response
        event = browser.clean_event_name(args.get("e"))
        visitor = browser.read_visitor(request, args.get("consent", ""))
        now = browser.now_ms()
        event_id = args.get("id", "")
        hit = Hit(
            event_id=event_id if 8 <= len(event_id) <= 64 else uuid.uuid4().hex,
            site_id=site.site_id,
            source=Source.PIXEL.value,
            type="page" if event == "page" else "track",
            event=event,
            received_at=now,
            timestamp=now,
            consent=visitor.consent,
            uid=visitor.uid,
            url=browser.clean_url(args.get("url")),
            referrer=browser.clean_url(args.get("ref")),
            title=browser.clean_text(args.get("title")),
            topics=browser.clean_topics(args.get("topics", "")),
            ip=visitor.ip,
            user_agent=visitor.user_agent,
        )
        withdrawal = browser.withdrawal_hit(visitor, site.site_id, Source.PIXEL, now)
        hits = [hit, withdrawal] if withdrawal else [hit]
        deps.appender.append(hits, _hit_counter("ok"))
        browser.finish_response(response, visitor, request, deps.config.cookie_domain)
    except browser.BadHit as exc:
        log.debug("pixel hit refused: %s", exc)
        _count_quietly(deps, "bad_input")
    except redis.RedisError:
        log.exception("pixel hit lost: Redis unavailable")
    return response


def _count_quietly(deps, outcome: str) -> None:
    try:
        deps.appender.append([], _hit_counter(outcome))
    except redis.RedisError:
        log.exception("could not count a refused pixel hit")
