"""The Flask application factory: every blueprint and fast path, registered here by name.

Each blueprint states who may call it where it is made (:mod:`dmp.web.auth`); the pixel and
the lookup answer as plain WSGI in front of Flask, for speed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import redis
from flask import Flask, request
from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable
from werkzeug.middleware.proxy_fix import ProxyFix

from collectors import (
    newsletter,
    newsletterhooks,
    pixel,
    sdksettings,
    tag,
    tcfpurposes,
    trackingapi,
)
from dmp.access.sites import SiteCache
from dmp.config import Config, load_config
from dmp.ingest.appender import Appender
from dmp.ingest.spool import Spool, spool_dir
from dmp.storage import keymigration, redisserver
from dmp.ui import (
    destinationpages,
    i18n,
    login,
    overview,
    pages,
    personpages,
    scoringpages,
    segmentbuilder,
    segmentpages,
    sessions,
    sitepages,
)
from dmp.web import audiences, lookup, openapi, ops, persons, segments
from dmp.web.deps import Deps, current_deps
from dmp.web.problems import from_http_exception, problem_response, unavailable
from dmp.web.ratelimits import RateLimits
from dmp.web.spec import static
from exporters import endpoints

log = logging.getLogger(__name__)

# Collectors (public: browsers and SDKs), the webhook (import keys), the admin API (admin
# keys), the ops endpoints and the OpenAPI document (public), in the order their routes
# are matched.
BLUEPRINTS = (
    tag.bp,
    trackingapi.bp,
    sdksettings.bp,
    newsletter.bp,
    newsletterhooks.bp,
    persons.bp,
    segments.bp,
    endpoints.bp,
    audiences.bp,
    ops.bp,
    openapi.bp,
    # The marketer UI: the login (and its static files) first, then one blueprint per area.
    login.bp,
    overview.bp,
    segmentbuilder.bp,  # before segmentpages: /segments/builder is not a segment's id
    segmentpages.bp,
    personpages.bp,
    destinationpages.bp,
    scoringpages.bp,
    sitepages.bp,
)


def _rename_old_keys(r: Any) -> None:
    """Rename the keys of an earlier version (once, dmp.storage.keymigration) unless Redis
    is away: collectors serve (and spool) without it, and the worker renames them then."""
    try:
        keymigration.ensure_current(r)
    except redis.RedisError as exc:
        log.warning("keyspace: not checked, Redis is away (%s); the worker will", exc)


def create_app(config: Config | Mapping[str, Any] | None = None) -> Flask:
    """Return the dmp app: defaults, then ``DMP_*`` variables, then ``config`` overrides."""
    if not isinstance(config, Config):
        config = load_config(config)
    tcfpurposes.of_config(config)  # a bad DMP_TCF_* rule stops the start, saying why
    app = Flask(__name__, static_folder=None)  # dmp.js is served by the tag collector
    # Bodies past the batch limit are refused before they are read (Segment: 500 KB).
    app.config["MAX_CONTENT_LENGTH"] = config.max_batch_bytes + 1024
    r = redisserver.connect_config(config)
    _rename_old_keys(r)
    spooler = Spool(spool_dir(config.data_dir), r, config.spool_max_bytes, config.stream_partitions)
    spooler.adopt_orphans()  # a collector process that died left hits behind
    limits = RateLimits(config.rate_limit_ip, config.rate_limit_key)
    sites = SiteCache(r, config.site_cache_seconds)
    appender = Appender(r, spooler, config.stream_partitions, config.collect_send_ms / 1000)
    deps = Deps(config, r, sites, appender, limits)
    app.extensions["dmp"] = deps

    sessions.install(app)
    pages.install(app)
    i18n.install(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    # The pixel and the lookup answer in plain WSGI before Flask is involved; these routes
    # only make Flask answer 405 for other methods on their paths.
    app.add_url_rule(pixel.PATH, "pixel", _pixel, methods=["GET"])
    app.add_url_rule(lookup.PATH, "lookup", _lookup, methods=["GET"])
    app.wsgi_app = pixel.PixelApp(app.wsgi_app, deps)  # type: ignore[method-assign]
    app.wsgi_app = lookup.LookupApp(app.wsgi_app, deps)  # type: ignore[method-assign]
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(redis.RedisError, _redis_away)
    app.register_error_handler(Exception, _unexpected)
    if config.proxy_hops:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=config.proxy_hops, x_proto=config.proxy_hops
        )
    return app


# What the fast paths take and answer is stated beside their code, for the document.
@static(pixel.OPERATION)
def _pixel():
    raise RuntimeError("served by collectors.pixel.PixelApp")


@static(lookup.OPERATION)
def _lookup():
    raise RuntimeError("served by dmp.web.lookup.LookupApp")


def _http_error(exc: HTTPException):
    if _in_ui():
        return login.error_page(exc)
    return from_http_exception(exc)


def _redis_away(exc: redis.RedisError):
    current_deps().appender.note_outage(exc)  # logged once; its end is looked for
    if _in_ui():
        return login.error_page(ServiceUnavailable("Redis is not answering; try again."))
    return unavailable().get_response()


def _unexpected(exc: Exception):
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    log.exception("unexpected error")
    if _in_ui():
        return login.error_page(InternalServerError())
    return problem_response(500, "Internal error", "the error was logged", "internal")


def _in_ui() -> bool:
    """Return whether the request is for a UI page (its errors are pages, not JSON)."""
    return sessions.is_ui(request.path)
