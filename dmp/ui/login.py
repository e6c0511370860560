"""The UI's front door: log in, log out, switch language; the static files; error pages.

This blueprint holds the UI's templates and static files and is the only UI blueprint
open without a session (its changes are CSRF-checked all the same).
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, make_response, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_wtf import FlaskForm
from werkzeug.exceptions import HTTPException
from wtforms import EmailField, PasswordField
from wtforms.validators import InputRequired, Length

from dmp.access.users import MAX_PASSWORD, authenticate
from dmp.ui import i18n, sessions
from dmp.ui.pages import SAFE_METHODS, csrf, safe_next, secure
from dmp.web.auth import UI_PREFIX
from dmp.web.deps import current_deps

log = logging.getLogger(__name__)
bp = Blueprint(
    "ui",
    __name__,
    url_prefix=UI_PREFIX,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)
bp.after_request(secure)
YEAR = 365 * 24 * 3600


class LoginForm(FlaskForm):
    """Email and password."""

    email = EmailField(validators=[InputRequired(), Length(max=320)])
    password = PasswordField(validators=[InputRequired(), Length(max=MAX_PASSWORD)])


@bp.before_request
def _secret() -> None:
    if request.method not in SAFE_METHODS and request.endpoint != "ui.static":
        csrf.protect()


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int]:
    """Show the login form; log the user in with a right password."""
    form = LoginForm()
    target = safe_next(request.values.get("next"))
    if request.method == "GET" and sessions.current_user(current_deps().redis) is not None:
        return redirect(target, 303)
    if form.validate_on_submit():
        found = authenticate(current_deps().redis, form.email.data or "", form.password.data or "")
        if found is not None:
            sessions.log_in(found)
            log.info("ui login: %s (%s)", found.email, found.role.value)
            return redirect(target, 303)
        log.warning("ui login refused for %r from %s", form.email.data, request.remote_addr)
        error = _("Email or password is wrong, or the account is locked for a while.")
        return render_template("ui/login.html", form=form, error=error, target=target), 401
    return render_template("ui/login.html", form=form, error=None, target=target)


@bp.post("/logout")
def logout() -> Response:
    """End the session and show the login form."""
    sessions.log_out()
    return redirect(url_for("ui.login"), 303)


@bp.post("/language")
def language() -> Response:
    """Remember the language chosen and go back to the page it was chosen on."""
    chosen = request.form.get("language", "")
    response = redirect(safe_next(request.form.get("next")), 303)
    if chosen in i18n.LANGUAGES:
        secure_cookie = request.is_secure
        response.set_cookie(
            i18n.COOKIE, chosen, max_age=YEAR, path=UI_PREFIX, samesite="Lax", secure=secure_cookie
        )
    return response


def error_page(exc: HTTPException) -> Response:
    """Return a UI error as a page in the user's language (the APIs answer problem+json)."""
    code = exc.code or 500
    titles = {
        400: _("The request could not be used"),
        401: _("Please log in"),
        403: _("Your role may not do this"),
        404: _("This page does not exist"),
        405: _("This page does not take that"),
        413: _("That was too large"),
        503: _("dmp cannot reach its database just now: please try again in a moment"),
    }
    title = titles.get(code, _("Something went wrong"))
    body = render_template("ui/error.html", code=code, title=title, detail=exc.description)
    return secure(make_response(body, code))
