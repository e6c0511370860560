"""Who is logged in to the UI: a signed session cookie naming a user, checked against Redis.

The cookie is Flask's signed session under the installation's secret (kept in Redis, so
every serve process signs alike); it is HttpOnly and SameSite=Lax always, and Secure
whenever the request came over HTTPS (directly or, with ``DMP_PROXY_HOPS``, through a
proxy that says so). It names the user and the moment their password was set: a removed
user, or one whose password was set again, is logged out on their next request, and a
changed role takes effect at once.
"""

from __future__ import annotations

import secrets
import time
from datetime import timedelta

import redis
from flask import Flask, Request, g, request, session
from flask.sessions import NullSession, SecureCookieSession, SecureCookieSessionInterface
from flask_wtf.csrf import generate_csrf

from dmp.access.users import Role, User, get_user
from dmp.storage import keyspace
from dmp.web.auth import UI_PREFIX


def is_ui(path: str) -> bool:
    """Return whether a request path is one of the UI's."""
    return path == UI_PREFIX or path.startswith(f"{UI_PREFIX}/")


COOKIE = "dmp_ui"
LIFETIME = timedelta(hours=12)  # a working day; then the password again


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie sessions for UI pages only, Secure exactly when the request
    was HTTPS; the signing secret is read from Redis on the first UI request."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """Return the UI request's session (None, a null session, for the APIs, or while
        Redis cannot give the secret: the page then says Redis is away)."""
        if not is_ui(request.path):
            return None
        if not app.secret_key:
            try:
                app.secret_key = load_secret(app.extensions["dmp"].redis)
            except redis.RedisError:
                return None
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        """Return whether the cookie is sent over HTTPS only: when this request was."""
        return request.is_secure


def install(app: Flask) -> None:
    """Configure ``app``'s session cookie (the secret comes from Redis on first use)."""
    app.session_interface = SessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_PATH="/ui",
        PERMANENT_SESSION_LIFETIME=LIFETIME,
    )


def load_secret(r: redis.Redis) -> str:
    """Return the installation's UI secret, made on first use."""
    r.set(keyspace.UI_SECRET, secrets.token_hex(32), nx=True)
    return r.get(keyspace.UI_SECRET) or ""


def form_token() -> str:
    """Return the session's CSRF token for a form ('' where there is no session: an error
    page while Redis is away)."""
    if isinstance(session._get_current_object(), NullSession):  # type: ignore[attr-defined]
        return ""
    return generate_csrf()


def log_in(user: User) -> None:
    """Start a fresh session for ``user`` (a new cookie: no session fixation)."""
    session.clear()
    session.permanent = True
    session["user"] = user.email
    session["since"] = user.created
    session["at"] = int(time.time())


def log_out() -> None:
    """End the session."""
    session.clear()


def current_user(r: redis.Redis) -> User | None:
    """Return the logged-in user of this request (None without a valid session)."""
    if "ui_user" in g:
        return g.ui_user
    email, since = session.get("user"), session.get("since")
    user = get_user(r, email) if isinstance(email, str) else None
    if user is None or user.created != since:
        user = None
    g.ui_user = user
    return user


def may_change(user: User | None) -> bool:
    """Return whether ``user`` may change anything (viewers only read)."""
    return user is not None and user.role is not Role.VIEWER
