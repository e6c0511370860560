"""The settings document analytics.js 2.0 loads first: ``GET /v1/projects/<writeKey>/settings``.

Segment's browser SDK (``@segment/analytics-next``) pointed at dmp with
``AnalyticsBrowser.load({writeKey, cdnURL: "https://t.acme.de"})`` fetches
``{cdnURL}/v1/projects/<writeKey>/settings`` before it sends anything. dmp answers with the
``Segment.io`` integration alone, its ``apiHost`` being the host (and path prefix) the
request came to plus ``/v1`` and its ``protocol`` the request's scheme (``X-Forwarded-Proto``
counts behind ``DMP_PROXY_HOPS`` proxies; the proxy must pass the ``Host`` header on), so
the SDK sends its events to dmp's tracking API (:mod:`collectors.trackingapi`). Nothing
else is offered: no other destinations, no tracking plan, no middleware, no remote
plugins, and remote metrics off (``sampleRate`` 0, their host dmp's), so that the page
never loads code or sends data anywhere but dmp.

Only a site's public write key has a document (a server key is a secret and gets the 404
of an unknown key), and only pages of the site's domains may read it: a request from
another origin gets a 403 problem the page can read (counted and logged as
``origin_not_allowed``, :mod:`collectors.refusals`). The document may be cached for five
minutes; it varies by ``Origin``.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Request, Response, jsonify, request

from collectors import refusals
from collectors.trackingapi import COLLECTOR
from dmp.access.sites import valid_write_key
from dmp.web.deps import current_deps
from dmp.web.params import Param
from dmp.web.problems import Problem
from dmp.web.schema import Free, Obj, Text
from dmp.web.spec import UNAVAILABLE, Reply, describe, problem

bp = Blueprint("sdksettings", __name__, url_prefix="/v1")

MAX_AGE_SECONDS = 300
# A Host header dmp will hand back to browsers as where to send events: a name or an IP
# literal, with an optional port; anything else is not a host.
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?"
)

WRITE_KEY = Param(
    "write_key", Text(), "path", description="The site's public write key (as in the tag)."
)
ORIGIN = Param("Origin", Text(), "header", description="The page's origin (browsers send it).")
SETTINGS = Obj(
    {
        "integrations": Obj(
            {"Segment.io": Obj({"apiKey": Text(), "apiHost": Text(), "protocol": Text()})},
            required=("Segment.io",),
        ),
        "metrics": Obj({"sampleRate": Free({"const": 0})}),
        "remotePlugins": Free({"type": "array", "maxItems": 0}),
    },
    required=("integrations", "metrics"),
    description="Segment's CDN settings, as analytics.js 2.0 reads them.",
)


def document(write_key: str, api_host: str, protocol: str) -> dict[str, Any]:
    """Return the settings document that sends analytics.js's events to ``api_host``."""
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": api_host,
                "protocol": protocol,
                "addBundledMetadata": False,  # which Segment destinations ran: none here
                "unbundledIntegrations": [],
            }
        },
        "metrics": {"sampleRate": 0, "host": api_host, "protocol": protocol},
        "remotePlugins": [],
    }


def api_host_of(req: Request) -> str:
    """Return where browsers reach dmp's tracking API (``host[:port][/prefix]/v1``), as
    the request came in; a 400 problem for a Host header that is no host."""
    host = req.host
    if not _HOST.fullmatch(host):
        raise Problem(400, "Bad host", "the Host header is not a host name", "bad-host")
    return f"{host}{req.root_path.rstrip('/')}/v1"


@bp.get("/projects/<write_key>/settings")
@describe(
    tag="collect",
    params=(WRITE_KEY, ORIGIN),
    replies={
        200: Reply(
            "The settings: events go to this dmp.",
            schema=SETTINGS,
            headers={
                "Cache-Control": f"public, max-age={MAX_AGE_SECONDS}",
                "Access-Control-Allow-Origin": "The page's origin, when it is the site's.",
            },
        ),
        400: problem("The Host header is not a host name."),
        403: problem("The page's origin is not one of the site's domains."),
        404: problem("No site has this public write key."),
        503: UNAVAILABLE,
    },
)
def settings(write_key: str, Origin: str | None) -> Response:  # the header's name
    """Return the analytics.js 2.0 settings of a site's public write key: its events go to
    this dmp's tracking API. A page of another origin gets a 403 it can read."""
    deps = current_deps()
    site = deps.sites.site_for_key(write_key) if valid_write_key(write_key) else None
    if site is None:
        refusals.count(deps, COLLECTOR, refusals.UNKNOWN_KEY)
        raise Problem(
            404,
            "Unknown write key",
            "no site has this write key: copy the site's public write key (dmp sites list)",
            "unknown-key",
        )
    origin = Origin or ""
    if origin and not site.allows_origin(origin):
        raise refusals.origin_refused(deps, COLLECTOR, site, origin)
    host = api_host_of(request)
    response = jsonify(document(write_key, host, request.scheme))
    response.headers["Cache-Control"] = f"public, max-age={MAX_AGE_SECONDS}"
    return response


@bp.after_request
def for_browsers(response: Response) -> Response:
    """Return the answer readable by the page that asked (its problems too), varying by
    Origin so that no cache hands one page's answer to another."""
    origin = request.headers.get("Origin", "")
    if origin:
        return refusals.readable(response, origin)
    response.vary.add("Origin")
    return response
