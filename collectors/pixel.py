"""The tracking pixel: ``GET /p.gif`` always answers a 1x1 transparent GIF.

The pixel is the hottest path dmp has, so it is served as plain WSGI in front of the Flask
app (:class:`PixelApp`): one query parse, one cookie lookup, one write to Redis that does
not wait for the answer (:class:`dmp.ingest.appender.Appender`), and a ready-made answer.

Consent is the page's ``consent=`` list, or, where GDPR applies (``gdpr=1``, the ad
servers' macro names), the purposes of the IAB TC string ``gdpr_consent`` decoded here
(:mod:`collectors.tcstring`, cached per string).
"""

from __future__ import annotations

import base64
import logging
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import redis

from collectors import browser, tcfpurposes
from collectors.consent import page_consent
from dmp.access.apikeys import hash_secret
from dmp.access.sites import WRITE_KEY_PREFIX, valid_write_key
from dmp.ingest import replay
from dmp.records import Hit, Source
from dmp.storage import metrics
from dmp.storage.outage import Outage
from dmp.web.deps import Deps
from dmp.web.params import BadQuery, Param, query_args
from dmp.web.schema import Text
from dmp.web.spec import Operation, Reply

log = logging.getLogger(__name__)
_OUTAGE = Outage(log, "Redis (pixel, no spool: hits lost)")

PATH = "/p.gif"
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
HEADERS = [
    ("Content-Type", "image/gif"),
    ("Content-Length", str(len(GIF))),
    ("Cache-Control", "no-store, no-cache, must-revalidate, max-age=0"),
    ("Pragma", "no-cache"),
    ("Expires", "0"),
    ("X-Content-Type-Options", "nosniff"),
    ("Access-Control-Allow-Origin", "*"),  # the GIF itself is no secret
]
COUNTERS = {
    outcome: {metrics.hits_counter("pixel", outcome): 1}
    for outcome in ("ok", "unknown_key", "bad_input", "rate_limited", "error")
}
_PAGE = Source.PIXEL.value
_KEEP_NONE: frozenset[str] = frozenset()
# An ad server's macro it did not fill in (${GDPR}, %%GDPR%%, [GDPR], {GDPR} once the query
# is decoded): none of these characters is in 0, 1 or a TC string's base64url.
_MACRO = re.compile(r"[$%{}\[\]]")

StartResponse = Callable[[str, list[tuple[str, str]]], Any]

# The pixel's parameters, for the OpenAPI document only: the hot path reads the query
# itself, and takes anything (what it cannot use it drops, and counts).
OPERATION = Operation(
    "Record a hit and answer a 1x1 transparent GIF, whatever the input",
    "collect",
    {
        200: Reply(
            "Always the GIF (an unknown key, bad input or a rate limit only count).",
            "image/gif",
            {"type": "string", "contentMediaType": "image/gif"},
            {"Set-Cookie": "dmp_uid, with the analytics consent (removed without it)."},
        )
    },
    params=tuple(
        Param(name, Text(), description=description)
        for name, description in (
            ("e", "The event name (page by default)."),
            ("url", "The page's URL."),
            ("ref", "The referrer."),
            ("title", "The page's title."),
            ("topics", "Content topics, comma-separated."),
            ("consent", "The consent categories granted, comma-separated (unless gdpr_consent)."),
            ("id", "An event id (8 to 64 characters), for retries."),
            ("cv", "The consent text's version."),
            (
                "gdpr",
                "1: GDPR applies, consent comes from gdpr_consent only (none without it);"
                " 0: it does not, gdpr_consent is ignored. Ad servers fill it as ${GDPR}.",
            ),
            (
                "gdpr_consent",
                "An IAB TCF v2.2 TC string; the consent comes from its purposes (see"
                " DMP_TCF_ADS, DMP_TCF_ANALYTICS) and replaces consent=; an undecodable string"
                " grants nothing. Implies gdpr=1. An unexpanded macro counts as absent.",
            ),
        )
    ),
    security=("pixelKey",),
    description="The write key is the k parameter. Served before Flask, for speed.",
)


class PixelApp:
    """WSGI middleware answering ``/p.gif`` itself and passing everything else on."""

    def __init__(self, app: Callable[..., Iterable[bytes]], deps: Deps) -> None:
        self.app = app
        self.deps = deps

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH:
            return self.app(environ, start_response)
        method = environ.get("REQUEST_METHOD")
        if method not in ("GET", "HEAD"):
            return self.app(environ, start_response)  # Flask answers 405
        if method == "HEAD":  # link checkers and monitors: no page view, no cookie
            start_response("200 OK", list(HEADERS))
            return []
        headers = list(HEADERS)
        set_cookie = record_hit(self.deps, environ)
        if set_cookie:
            headers.append(("Set-Cookie", set_cookie))
        start_response("200 OK", headers)
        return [GIF]


def record_hit(deps: Deps, environ: Mapping[str, Any]) -> str:
    """Put one pixel hit on the stream; return the Set-Cookie value due ('' for none).

    Never raises for bad input: problems are counted in ``dmp_hits_total`` instead.
    """
    try:
        query = environ.get("QUERY_STRING", "")
        if len(query) > deps.config.max_query_bytes:
            raise browser.BadHit("query string too long")
        args = query_args(query)
        site_id, keep = _site_of(deps, args.get("k", ""))
        unresolved = site_id.startswith(replay.UNRESOLVED)
        if not site_id:
            deps.appender.count(COUNTERS["unknown_key"])
            return ""
        if deps.limits.wait(environ.get("REMOTE_ADDR") or "", site_id):
            deps.appender.count(COUNTERS["rate_limited"])  # the page gets its GIF all the same
            return ""
        event = browser.clean_event_name(args.get("e"))
        consent, version = page_consent(
            args.get("consent", ""),
            args.get("cv"),
            _filled(args.get("gdpr_consent", "")),
            _filled(args.get("gdpr", "")),
            tcfpurposes.of_config(deps.config),
        )
        visitor = browser.visitor_of(environ, consent, version)
        now = browser.now_ms()
        event_id = args.get("id", "")
        hit = Hit(
            event_id=event_id if 8 <= len(event_id) <= 64 else uuid.uuid4().hex,
            site_id=site_id,
            source=_PAGE,
            type="page" if event == "page" else "track",
            event=event,
            received_at=now,
            timestamp=now,
            consent=visitor.consent,
            uid=visitor.uid,
            url=browser.clean_url(args.get("url"), keep),
            referrer=browser.clean_url(args.get("ref"), keep),
            title=browser.clean_title(args.get("title")),
            topics=browser.clean_topics(args.get("topics", "")),
            ip=visitor.ip,
            user_agent=visitor.user_agent,
            consent_version=version,
        )
        withdrawal = browser.withdrawal_hit(visitor, site_id, Source.PIXEL, now)
        hits = [hit, withdrawal] if withdrawal else [hit]
        # A hit whose site is a key's hash waits in the spool until the replay knows it.
        # It counts as ok once the replay knew its site (or as unknown_key).
        deps.appender.append(hits, {} if unresolved else COUNTERS["ok"], spool=unresolved)
        _OUTAGE.up()
        return browser.cookie_header(visitor, environ, deps.config.cookie_domain)
    except (browser.BadHit, BadQuery) as exc:
        log.debug("pixel hit refused: %s", exc)
        deps.appender.count(COUNTERS["bad_input"])
    except redis.RedisError as exc:  # only without a spool (it takes hits Redis does not)
        _OUTAGE.down(exc)
    except Exception:  # the page always gets its GIF; the bug is logged and counted
        log.exception("pixel hit lost: unexpected error")
        deps.appender.count(COUNTERS["error"])
    return ""


def _filled(value: str) -> str:
    """Return a TCF parameter's value, or '' for an ad-server macro left unexpanded."""
    return "" if _MACRO.search(value) else value.strip()


def _site_of(deps: Deps, write_key: str) -> tuple[str, frozenset[str]]:
    """Return the site id of a write key ('' for none) and the query parameters its URLs
    keep.

    While Redis is away and the key is not in this process's cache, the hit is spooled
    with the key's hash in place of the site id (the replay resolves it, or drops it), and
    its URLs keep only campaign tags.
    """
    try:
        site = deps.sites.site_for_key(write_key)
    except redis.RedisError:
        if deps.appender.spool is None or not valid_write_key(write_key):
            raise
        if not write_key.startswith(WRITE_KEY_PREFIX):
            return "", _KEEP_NONE  # no site's key: junk must not fill the spool in an outage
        return replay.UNRESOLVED + hash_secret(write_key), _KEEP_NONE
    return (site.site_id, site.keep_params) if site else ("", _KEEP_NONE)
