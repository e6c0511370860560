"""Who may call what: every route but the documented public ones refuses requests without
the right key, walked from the app's URL map (a moved route cannot lose its check)."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.routing import Rule

from dmp.access.apikeys import Scope, create_key
from dmp.web import auth
from dmp.web.openapi import is_ui

# Routes a partner (an ad tool) may call; every other keyed route is for admins (and the
# newsletter webhook, for import keys too).
PARTNER_ROUTES = {
    "/api/v1/lookup",
    "/api/v1/audiences",
    "/api/v1/audiences/<sid>/members",
    "/api/v1/audiences/<sid>/changes",
}
IMPORT_ROUTES = {
    "/hooks/newsletter",
    "/hooks/newsletter/mailchimp",
    "/hooks/newsletter/brevo",
    "/hooks/newsletter/cleverreach",
}
SAMPLE_VALUES = {"pid": "0123456789abcdef", "sid": "some-segment", "kind": "track"}


def _calls(app: Flask) -> list[tuple[str, str, str]]:
    """Return (rule, method, path) for every method of every keyed route (the UI's pages
    take a login session instead: tests/ui/test_login.py walks them)."""
    calls = []
    adapter = app.url_map.bind("localhost")
    for rule in app.url_map.iter_rules():
        if rule.rule in auth.PUBLIC or is_ui(rule.rule):
            continue
        for method in sorted((rule.methods or set()) - {"OPTIONS"}):
            path = adapter.build(rule.endpoint, _values(rule), method=method)
            calls.append((rule.rule, method, path))
            if rule.rule in PARTNER_ROUTES:  # bad parameters must not be answered first
                calls.append((rule.rule, method, f"{path}?uid=visitor-1"))
    return calls


def _values(rule: Rule) -> dict[str, str]:
    return {name: SAMPLE_VALUES.get(name, "x") for name in rule.arguments}


def _refused(client: FlaskClient, method: str, path: str, key: str | None) -> bool:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    res = client.open(path, method=method, headers=headers, json={})
    return res.status_code == 401 and res.mimetype == "application/problem+json"


def test_the_public_routes_are_the_documented_ones(app: Flask) -> None:
    """The public list is exactly the collect endpoints (analytics.js's settings too), the
    tag, /healthz, /metrics and the OpenAPI document, and each of them exists (a stale
    entry would hide nothing, but says what is not true)."""
    assert auth.PUBLIC == {
        "/p.gif",
        "/dmp.js",
        "/collect",
        "/v1/<kind>",
        "/v1/batch",
        "/v1/import",
        "/v1/b",
        "/v1/projects/<write_key>/settings",
        "/healthz",
        "/metrics",
        "/api/v1/openapi.json",
    }
    assert auth.PUBLIC <= {rule.rule for rule in app.url_map.iter_rules()}


def test_the_walk_covers_every_keyed_route(app: Flask) -> None:
    """The walk below reaches the admin, segments, webhook and lookup routes (and no
    static-files route exists that nobody checks)."""
    rules = {rule for rule, _, _ in _calls(app)}
    assert {"/api/v1/persons/<pid>", "/api/v1/segments/<sid>", "/api/v1/segments/runs"} <= rules
    assert PARTNER_ROUTES | IMPORT_ROUTES <= rules
    assert not any(rule.startswith("/static") for rule in rules)


def test_every_keyed_route_refuses_no_key_and_a_write_key(
    client: FlaskClient, write_key: str
) -> None:
    """Without a key, with a made-up key or with a site's (public) write key: 401."""
    for rule, method, path in _calls(client.application):
        for key in (None, "", "dmp_ad_made-up", write_key):
            assert _refused(client, method, path, key), (rule, method, key)


def test_admin_routes_refuse_partner_and_import_keys(client: FlaskClient, redis) -> None:
    """A partner or import key opens no admin route (only the lookup and the webhook)."""
    partner = create_key(redis, Scope.PARTNER, "ad tool", ("some-segment",))
    importer = create_key(redis, Scope.IMPORT, "newsletter tool")
    for rule, method, path in _calls(client.application):
        if rule not in PARTNER_ROUTES:
            assert _refused(client, method, path, partner), (rule, method)
        if rule not in IMPORT_ROUTES:
            assert _refused(client, method, path, importer), (rule, method)


@pytest.mark.parametrize("scope", [Scope.ADMIN, Scope.PARTNER])
def test_the_right_key_opens_its_routes(client: FlaskClient, redis, scope: Scope) -> None:
    """Admin keys open the admin routes, partner keys the lookup: no route refuses all."""
    audiences = ("some-segment",) if scope is Scope.PARTNER else ()
    key = create_key(redis, scope, "right key", audiences)
    for rule, method, path in _calls(client.application):
        if (rule in PARTNER_ROUTES) == (scope is Scope.PARTNER):
            assert not _refused(client, method, path, key), (rule, method)


@pytest.mark.parametrize("scope", [None, Scope.ADMIN, Scope.PARTNER])
def test_keyed_answers_are_neither_cached_nor_sniffed(
    client: FlaskClient, redis, scope: Scope | None
) -> None:
    """Every answer of a keyed route, refused or not, says Cache-Control: no-store and
    X-Content-Type-Options: nosniff (personal data must not sit in caches)."""
    key = None
    if scope is not None:
        audiences = ("some-segment",) if scope is Scope.PARTNER else ()
        key = create_key(redis, scope, "key", audiences)
    for rule, method, path in _calls(client.application):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        res = client.open(path, method=method, headers=headers, json={})
        assert res.headers.get("Cache-Control") == "no-store", (rule, method, res.status_code)
        assert res.headers.get("X-Content-Type-Options") == "nosniff", (rule, method)


def test_an_admin_key_is_never_taken_from_the_url(client: FlaskClient, redis, admin_key) -> None:
    """?key= (for tools that cannot set headers) takes import keys only: an admin key in a
    URL would end up in access logs, so it opens nothing there."""
    event = {"email": "anna@acme.de", "event": "open", "time": 1757494860}
    as_query = client.post(f"/hooks/newsletter?key={admin_key}", json=event)
    assert as_query.status_code == 401
    importer = create_key(redis, Scope.IMPORT, "newsletter tool")
    assert client.post(f"/hooks/newsletter?key={importer}", json=event).status_code == 202
    as_header = client.post(
        "/hooks/newsletter", json=event, headers={"Authorization": f"Bearer {admin_key}"}
    )
    assert as_header.status_code == 202
