"""What every request handler needs, built once per app and kept in ``app.extensions``."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import current_app

from dmp.access.sites import SiteCache
from dmp.config import Config
from dmp.ingest.appender import Appender
from dmp.web.ratelimits import RateLimits


@dataclass(frozen=True, slots=True)
class Deps:
    """The app's explicit dependencies."""

    config: Config
    redis: redis.Redis
    sites: SiteCache
    appender: Appender  # the pixel's fire-and-forget path onto the stream
    limits: RateLimits  # the collect endpoints' limits per client IP and write key


def current_deps() -> Deps:
    """Return the running app's dependencies."""
    return current_app.extensions["dmp"]
