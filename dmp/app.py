"""The Flask application factory: collectors, admin API and ops endpoints on one app."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from dmp import redisserver
from dmp.config import Config, load_config
from dmp.deps import Deps
from dmp.problems import from_http_exception, problem_response
from dmp.sites import SiteCache
from dmp.stream import Appender

log = logging.getLogger(__name__)


def connect_config(config: Config):
    """Return a Redis client for the config: its URL, or the data dir's embedded server."""
    url = config.redis_url or redisserver.attach_embedded(config.data_dir).url
    return redisserver.connect(url)


def create_app(config: Config | Mapping[str, Any] | None = None) -> Flask:
    """Return the dmp app: defaults, then ``DMP_*`` variables, then ``config`` overrides."""
    if not isinstance(config, Config):
        config = load_config(config)
    app = Flask(__name__)
    # Bodies past the batch limit are refused before they are read (Segment: 500 KB).
    app.config["MAX_CONTENT_LENGTH"] = config.max_batch_bytes + 1024
    r = connect_config(config)
    app.extensions["dmp"] = Deps(config, r, SiteCache(r, config.site_cache_seconds), Appender(r))

    from collectors import pixel, segmentspec, tag
    from dmp import api, ops

    for blueprint in (pixel.bp, tag.bp, segmentspec.bp, api.bp, ops.bp):
        app.register_blueprint(blueprint)
    app.register_error_handler(HTTPException, from_http_exception)
    app.register_error_handler(Exception, _unexpected)
    if config.proxy_hops:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=config.proxy_hops, x_proto=config.proxy_hops
        )
    return app


def _unexpected(exc: Exception):
    if isinstance(exc, HTTPException):
        return from_http_exception(exc)
    log.exception("unexpected error")
    return problem_response(500, "Internal error", "the error was logged", "internal")
