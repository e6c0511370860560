"""What every UI page blueprint shares: a login, CSRF on every change, roles, safe headers.

A page blueprint (:func:`page_blueprint`) answers nobody without a session: a page asked
for is a redirect to the login (which comes back), anything else a 401. Every request that
could change something carries the CSRF token of the session (a form field or, from
htmx, the ``X-CSRFToken`` header), and a viewer's is refused with 403 unless its view is
marked :func:`changes_nothing` (a live preview is a POST that only reads).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, abort, current_app, redirect, request, url_for
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import CSRFProtect
from wtforms.fields.choices import SelectChoice

from dmp.access.users import Role, User
from dmp.ui import sessions
from dmp.web.auth import UI_PREFIX
from dmp.web.deps import current_deps
from dmp.web.problems import PRIVATE

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Scripts only from dmp itself (no inline script, no CDN); inline styles for the SVG charts.
POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "frame-ancestors 'none'",
        "form-action 'self'",
        "base-uri 'none'",
    )
)
HEADERS = {
    **PRIVATE,
    "Content-Security-Policy": POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
# The header's navigation: (endpoint, label); an area whose blueprint is not registered
# is left out.
NAV = (
    ("overview.index", _l("Overview")),
    ("segment_pages.index", _l("Segments")),
    ("person_pages.index", _l("Persons")),
    ("destination_pages.index", _l("Destinations")),
    ("scoring_pages.index", _l("Scoring")),
    ("site_pages.index", _l("Sites and keys")),
)
csrf = CSRFProtect()
F = TypeVar("F", bound=Callable[..., Any])


def install(app: Flask) -> None:
    """Give ``app`` CSRF checking for the UI only (the APIs take keys, not cookies)."""
    app.config.update(WTF_CSRF_CHECK_DEFAULT=False, WTF_CSRF_TIME_LIMIT=None)
    csrf.init_app(app)
    app.jinja_env.globals.update(
        nav=navigation, may_change=may_change, is_admin=is_admin, form_token=sessions.form_token
    )


def navigation() -> list[tuple[str, str, bool]]:
    """Return the header's (url, label, current) for every registered page area."""
    here = (request.endpoint or "").split(".")[0]
    return [
        (url_for(endpoint), str(label), endpoint.split(".")[0] == here)
        for endpoint, label in NAV
        if endpoint in current_app.view_functions
    ]


def page_blueprint(name: str, import_name: str, url_prefix: str = "") -> Blueprint:
    """Return a blueprint of UI pages under ``/ui<url_prefix>``, for logged-in users only."""
    bp = Blueprint(name, import_name, url_prefix=f"{UI_PREFIX}{url_prefix}")
    bp.before_request(_guard)
    bp.after_request(secure)
    return bp


def options(pairs: Iterable[tuple[str, Any]]) -> list[SelectChoice]:
    """Return (value, label) pairs as the choices of a select field."""
    return [SelectChoice(value, label) for value, label in pairs]


def changes_nothing(view: F) -> F:
    """Mark a POST view that only reads (previews, validation): viewers may call it."""
    view.changes_nothing = True  # type: ignore[attr-defined]
    return view


def user() -> User:
    """Return the logged-in user of a page request (the guard has made sure of one)."""
    found = sessions.current_user(current_deps().redis)
    if found is None:
        abort(401)
    return found


def may_change() -> bool:
    """Return whether the page's user may change things (templates hide buttons if not)."""
    return sessions.may_change(sessions.current_user(current_deps().redis))


def is_admin() -> bool:
    """Return whether the page's user is an admin (keys, users)."""
    found = sessions.current_user(current_deps().redis)
    return found is not None and found.role is Role.ADMIN


def _guard() -> Response | None:
    found = sessions.current_user(current_deps().redis)
    if found is None:
        if request.method in SAFE_METHODS:
            return redirect(url_for("ui.login", next=request.full_path.rstrip("?")), 303)
        abort(401)
    if request.method not in SAFE_METHODS:
        csrf.protect()
        view = current_app.view_functions.get(request.endpoint or "")
        if not sessions.may_change(found) and not getattr(view, "changes_nothing", False):
            abort(403)
    return None


def secure(response: Response) -> Response:
    """Add the headers every UI answer carries: private, framed by nobody, own scripts only."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def safe_next(target: str | None) -> str:
    """Return where to go after the login: a UI path of this site only (never elsewhere)."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and parts.path.startswith(f"{UI_PREFIX}/"):
            if "\\" not in target and not target.startswith("//"):
                return target
    return url_for("overview.index")
