"""Refused browser hits made visible: counted by outcome, logged once a minute per site
and origin with the fix, and a problem the page may read."""

from __future__ import annotations

import logging

from collectors import refusals
from dmp.access.sites import Site
from dmp.storage import keyspace, metrics

SITE = Site("acme-gmbh", "Acme GmbH", ("acme.de", "www.acme.de"), "2026-11-29T00:00:00+00:00")


def test_an_origin_refusal_is_counted_logged_with_the_fix_and_a_403(app, caplog) -> None:
    """The 403 names the origin; the WARNING names the site's domains and the command that
    adds the page's host; the counter counts every refusal."""
    deps = app.extensions["dmp"]
    origin = "https://shop.example.net:8443"
    with caplog.at_level(logging.WARNING, logger="collectors.refusals"):
        problem = refusals.origin_refused(deps, "tag", SITE, origin)
        refusals.origin_refused(deps, "tag", SITE, origin)
    assert problem.code == 403 and origin in problem.detail
    [line] = [r.getMessage() for r in caplog.records]  # once within the minute
    assert "acme.de, www.acme.de" in line
    assert "dmp sites domains acme-gmbh --add shop.example.net" in line
    deps.appender.sync()
    field = metrics.hits_counter("tag", refusals.ORIGIN_NOT_ALLOWED)
    assert deps.redis.hget(keyspace.METRICS, field) == "2"


def test_the_log_throttle_is_per_site_and_origin_and_per_minute() -> None:
    """Another origin or another site logs at once; the same pair again after a minute."""
    throttle = refusals._Throttle(60.0)
    assert throttle.due(("acme", "https://a.test"), now=0.0)
    assert not throttle.due(("acme", "https://a.test"), now=59.0)
    assert throttle.due(("acme", "https://b.test"), now=59.0)
    assert throttle.due(("beta", "https://a.test"), now=59.0)
    assert throttle.due(("acme", "https://a.test"), now=60.0)


def test_the_throttle_forgets_old_pairs_instead_of_growing_without_bound() -> None:
    """A flood of made-up origins cannot make the process's memory grow past its cap."""
    throttle = refusals._Throttle(60.0)
    for i in range(refusals._MAX_REMEMBERED + 500):
        throttle.due(("acme", f"https://{i}.test"), now=float(i) / 1000)
    assert len(throttle._last) <= refusals._MAX_REMEMBERED


def test_readable_adds_cors_only_with_an_origin(app) -> None:
    """A page's origin gets Allow-Origin with credentials; no origin, no CORS header."""
    from flask import Response

    with app.test_request_context():
        shown = refusals.readable(Response(status=403), "https://acme.de")
        plain = refusals.readable(Response(status=403), "")
    assert shown.headers["Access-Control-Allow-Origin"] == "https://acme.de"
    assert shown.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Access-Control-Allow-Origin" not in plain.headers
