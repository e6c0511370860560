"""The UI's login: sessions, CSRF, roles, lockout, language; no page without a login."""

from __future__ import annotations

import pytest
import redis as redis_lib
from flask import Flask
from werkzeug.routing import Rule

from dmp.access.users import MAX_FAILURES, Role, add_user, remove_user
from dmp.ui import sessions
from dmp.web.auth import UI_PREFIX
from tests.ui.conftest import PASSWORD, Session, csrf_of, log_in

OPEN = {f"{UI_PREFIX}/login", f"{UI_PREFIX}/logout", f"{UI_PREFIX}/language"}


def _ui_rules(app: Flask) -> list[Rule]:
    return [r for r in app.url_map.iter_rules() if sessions.is_ui(r.rule)]


def _path(app: Flask, rule: Rule) -> str:
    values = {name: "x" for name in rule.arguments}
    return app.url_map.bind("localhost").build(rule.endpoint, values)


def test_no_page_or_data_without_a_login(app: Flask) -> None:
    """Every UI route but the login's own answers a page request with a redirect to the
    login (coming back after) and any other request with 401, never with data."""
    client = app.test_client()
    rules = [r for r in _ui_rules(app) if r.rule not in OPEN and r.endpoint != "ui.static"]
    assert rules, "the walk found no UI pages"
    for rule in rules:
        path = _path(app, rule)
        for method in sorted((rule.methods or set()) - {"OPTIONS", "HEAD"}):
            res = client.open(path, method=method, data={"x": "1"})
            if method == "GET":
                assert res.status_code == 303, (method, path)
                assert res.headers["Location"].startswith("/ui/login?next="), path
            else:
                assert res.status_code == 401, (method, path, res.status_code)
            assert b"csrf" not in res.data or res.status_code == 401


def test_a_right_password_logs_in_and_the_cookie_is_guarded(app: Flask, users) -> None:
    """The session cookie is HttpOnly, SameSite=Lax, only for /ui, and not Secure over HTTP."""
    client = app.test_client()
    token = csrf_of(client.get("/ui/login").get_data(as_text=True))
    res = client.post(
        "/ui/login",
        data={"email": users[Role.MARKETER], "password": PASSWORD, "csrf_token": token},
    )
    assert res.status_code == 303 and res.headers["Location"] == "/ui/"
    cookie = res.headers["Set-Cookie"]
    assert cookie.startswith(f"{sessions.COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie
    page = client.get("/ui/")
    assert page.status_code == 200 and users[Role.MARKETER].encode() in page.data


def test_behind_https_the_cookie_is_secure(app: Flask, users) -> None:
    """Over HTTPS the session cookie is sent over HTTPS only."""
    client = app.test_client()
    base = {"base_url": "https://dmp.acme.de"}
    token = csrf_of(client.get("/ui/login", **base).get_data(as_text=True))
    res = client.post(
        "/ui/login",
        data={"email": users[Role.VIEWER], "password": PASSWORD, "csrf_token": token},
        headers={"Referer": "https://dmp.acme.de/ui/login"},
        **base,
    )
    assert res.status_code == 303
    assert "Secure" in res.headers["Set-Cookie"]


def test_a_wrong_password_is_refused_and_repeated_ones_lock(app: Flask, users) -> None:
    """A wrong password answers 401 with the form again; after MAX_FAILURES of them the
    right one does not log in either (the same answer: the lock tells a guesser nothing)."""
    client = app.test_client()
    token = csrf_of(client.get("/ui/login").get_data(as_text=True))
    email = users[Role.MARKETER]
    for _ in range(MAX_FAILURES):
        res = client.post(
            "/ui/login", data={"email": email, "password": "wrong" * 4, "csrf_token": token}
        )
        assert res.status_code == 401 and b'role="alert"' in res.data
    res = client.post("/ui/login", data={"email": email, "password": PASSWORD, "csrf_token": token})
    assert res.status_code == 401
    assert client.get("/ui/").status_code == 303


def test_a_login_without_the_csrf_token_is_refused(app: Flask, users) -> None:
    """Every form needs the session's CSRF token: a login from another site is refused."""
    client = app.test_client()
    client.get("/ui/login")
    res = client.post("/ui/login", data={"email": users[Role.ADMIN], "password": PASSWORD})
    assert res.status_code == 400 and res.mimetype == "text/html"
    assert client.get("/ui/").status_code == 303


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/ui/", "/api/v1/x"])
def test_the_login_goes_back_only_to_ui_pages(app: Flask, users, target: str) -> None:
    """``next`` leads back to a UI page of this site, never elsewhere (no open redirect)."""
    client = app.test_client()
    token = csrf_of(client.get("/ui/login").get_data(as_text=True))
    res = client.post(
        "/ui/login",
        data={"email": users[Role.ADMIN], "password": PASSWORD, "csrf_token": token}
        | {"next": target},
    )
    assert res.headers["Location"] == "/ui/"


def test_logout_ends_the_session(as_marketer: Session) -> None:
    """After logging out the pages ask for the login again."""
    assert as_marketer.get("/ui/").status_code == 200
    assert as_marketer.post("/ui/logout").status_code == 303
    assert as_marketer.get("/ui/").status_code == 303


def test_a_removed_user_or_a_new_password_ends_open_sessions(
    redis: redis_lib.Redis, as_marketer: Session, as_viewer: Session, users
) -> None:
    """A session lasts only while its user exists with the password it logged in with."""
    remove_user(redis, users[Role.MARKETER])
    assert as_marketer.get("/ui/").status_code == 303
    add_user(redis, users[Role.VIEWER], "another long password", Role.VIEWER, replace=True)
    assert as_viewer.get("/ui/").status_code == 303


def test_a_viewer_cannot_change_anything(as_viewer: Session, app: Flask) -> None:
    """Every UI route that takes a change answers a viewer 403 (previews excepted)."""
    for rule in _ui_rules(app):
        if rule.rule in OPEN or not (rule.methods or set()) & {"POST", "PUT", "DELETE"}:
            continue
        view = app.view_functions[rule.endpoint]
        if getattr(view, "changes_nothing", False):
            continue
        res = as_viewer.post(_path(app, rule))
        assert res.status_code == 403, rule.rule


def test_the_language_follows_the_browser_and_the_switch(as_marketer: Session) -> None:
    """German for a German browser; the switch overrides it and is remembered."""
    german = as_marketer.get("/ui/", headers={"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"})
    assert b'lang="de"' in german.data and "Übersicht".encode() in german.data
    english = as_marketer.get("/ui/", headers={"Accept-Language": "en-GB"})
    assert b'lang="en"' in english.data and b"Overview" in english.data
    res = as_marketer.post("/ui/language", data={"language": "de", "next": "/ui/"})
    assert res.status_code == 303 and res.headers["Location"] == "/ui/"
    after = as_marketer.get("/ui/", headers={"Accept-Language": "en-GB"})
    assert b'lang="de"' in after.data


def test_pages_forbid_framing_and_foreign_scripts(as_marketer: Session) -> None:
    """UI answers are private, not frameable, and run only dmp's own scripts."""
    res = as_marketer.get("/ui/")
    assert res.headers["Cache-Control"] == "no-store"
    assert res.headers["X-Frame-Options"] == "DENY"
    assert "script-src 'self'" in res.headers["Content-Security-Policy"]


def test_an_unknown_ui_page_is_a_page_not_json(as_marketer: Session) -> None:
    """A UI 404 is an HTML page in the user's language, not problem+json."""
    res = as_marketer.get("/ui/no-such-page", headers={"Accept-Language": "de"})
    assert res.status_code == 404 and res.mimetype == "text/html"
    assert b"Diese Seite gibt es nicht" in res.data


def test_the_ui_is_not_in_the_api_document(client) -> None:
    """The OpenAPI document lists the APIs, not the UI's pages."""
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    assert not [p for p in paths if p.startswith(UI_PREFIX)]


def test_logging_in_twice_keeps_one_session(app: Flask, users) -> None:
    """Logging in again starts a fresh session (no session fixation)."""
    client = app.test_client()
    first = log_in(client, users[Role.ADMIN])
    client.post("/ui/logout", data={"csrf_token": first})
    second = log_in(client, users[Role.ADMIN])
    assert first != second
