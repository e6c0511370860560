"""Refused browser hits a web developer can see: in the console, the log and /metrics.

A browser reads a cross-origin answer only if it carries ``Access-Control-Allow-Origin``
for the page's origin. A refusal (wrong origin, unknown key, bad input) is answered with
those headers too, so the page's console shows the problem's text instead of a bare CORS
error; the problem holds nothing the page did not send. Each refusal is counted in
``dmp_hits_total`` by collector and outcome, and an origin refused for a site is logged at
WARNING once a minute per site and origin, naming the site's domains.
"""

from __future__ import annotations

import logging
import threading
import time
from urllib.parse import urlsplit

from flask import Response

from dmp.access.sites import Site
from dmp.storage import metrics
from dmp.web.deps import Deps
from dmp.web.problems import Problem

log = logging.getLogger(__name__)

# Outcomes of a browser hit, as dmp_hits_total's outcome label and `dmp status` show them.
OK = "ok"
ORIGIN_NOT_ALLOWED = "origin_not_allowed"
UNKNOWN_KEY = "unknown_key"
BAD_INPUT = "bad_input"
RATE_LIMITED = "rate_limited"
LOG_EVERY_SECONDS = 60.0
_MAX_REMEMBERED = 10_000  # (site, origin) pairs; past it the oldest are forgotten


class _Throttle:
    """Says whether a (site, origin) pair was logged within the last minute."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._last: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def due(self, key: tuple[str, str], now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.every:
                return False
            if len(self._last) >= _MAX_REMEMBERED:
                cutoff = now - self.every
                self._last = {k: t for k, t in self._last.items() if t >= cutoff}
                if len(self._last) >= _MAX_REMEMBERED:
                    self._last.clear()
            self._last[key] = now
            return True


_THROTTLE = _Throttle(LOG_EVERY_SECONDS)


def count(deps: Deps, collector: str, outcome: str, amount: int = 1) -> None:
    """Count ``amount`` hits of ``collector`` with ``outcome`` in dmp_hits_total."""
    deps.appender.count({metrics.hits_counter(collector, outcome): amount})


def origin_refused(deps: Deps, collector: str, site: Site, origin: str) -> Problem:
    """Count and log (throttled) a hit refused because ``origin`` is not one of ``site``'s
    domains; return the 403 problem to raise."""
    count(deps, collector, ORIGIN_NOT_ALLOWED)
    if _THROTTLE.due((site.site_id, origin)):
        log.warning(
            "%s hit refused: origin %s is not a domain of site %s (its domains: %s); "
            "if the page belongs to the site: dmp sites domains %s --add %s",
            collector,
            origin,
            site.site_id,
            ", ".join(site.domains),
            site.site_id,
            urlsplit(origin).hostname or origin,
        )
    return Problem(
        403,
        "Origin not allowed",
        f"{origin} is not a domain of the site this write key belongs to; "
        "add the page's host to the site's domains (dmp sites domains SITE --add HOST) or "
        "use the key of this page's site",
        "origin-not-allowed",
    )


def preflight(deps: Deps, origin: str, methods: str, headers: str, max_age: int) -> Response:
    """Return the 204 that lets pages of ``origin`` send ``methods`` with ``headers`` (the
    key itself is checked on the request), cached ``max_age`` seconds; the 403 problem to
    raise for an origin that belongs to no site (the answer's CORS headers come from
    :func:`readable`, as every answer's do)."""
    if not origin or not deps.sites.any_allows_origin(origin):
        raise Problem(403, "Origin not allowed", "this origin belongs to no site", "forbidden")
    response = Response(status=204)
    response.headers["Access-Control-Allow-Methods"] = methods
    response.headers["Access-Control-Allow-Headers"] = headers
    response.headers["Access-Control-Max-Age"] = str(max_age)
    return response


def readable(response: Response, origin: str) -> Response:
    """Return ``response`` with the CORS headers that let a page of ``origin`` read it
    (with credentials: the tag sends its cookie). No-op without an origin."""
    if origin:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers.add("Vary", "Origin")
    return response
