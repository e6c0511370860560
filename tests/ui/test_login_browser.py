"""Logging in, switching language and logging out in a real headless Chromium."""

from __future__ import annotations

import re

from dmp.access.users import Role
from tests.ui.browser import WIDTHS, Browser
from tests.ui.conftest import PASSWORD


def test_log_in_switch_language_and_log_out(chromium: Browser, live_url: str, users) -> None:
    """A marketer logs in (the form comes back to the page asked for), sees the overview,
    switches to German and back, and logs out; every page passes axe-core."""
    with chromium.page(live_url) as page:
        page.goto("/ui/")
        page.wait_for_url(re.compile(r"/ui/login\?next="))
        page.check("login-en")
        page.log_in(users[Role.MARKETER], PASSWORD)
        assert page.url.endswith("/ui/")
        assert page.get_by_role("heading", name="Overview").is_visible()
        page.check("overview-en")
        page.get_by_role("button", name="DE").click()
        page.get_by_role("heading", name="Übersicht").wait_for()
        assert page.locator("html").get_attribute("lang") == "de"
        page.check("overview-de")
        page.get_by_role("button", name="Abmelden").click()
        page.wait_for_url(re.compile(r"/ui/login"))
        assert page.get_by_role("heading", name="Bei dmp anmelden").is_visible()


def test_a_wrong_password_is_said_in_german(chromium: Browser, live_url: str, users) -> None:
    """A German browser gets the login in German, and a wrong password says so."""
    with chromium.page(live_url, language="de", width=WIDTHS["phone"]) as page:
        page.goto("/ui/login")
        page.get_by_label("E-Mail").fill(users[Role.VIEWER])
        page.get_by_label("Passwort").fill("not the password")
        page.get_by_role("button", name="Anmelden").click()
        page.get_by_role("alert").wait_for()
        assert "falsch" in page.get_by_role("alert").inner_text()
        page.errors.clear()  # the browser logs the 401 itself
        page.check("login-wrong-password-de-phone")


def test_the_keyboard_alone_logs_in(chromium: Browser, live_url: str, users) -> None:
    """The email field has the focus, Tab leads to the password, Enter sends the form; on
    the page after, the first Tab reaches the skip link, which jumps to the content."""
    with chromium.page(live_url) as page:
        page.goto("/ui/login")
        assert page.evaluate("document.activeElement.id") == "email"
        page.keyboard.type(users[Role.ADMIN])
        page.keyboard.press("Tab")
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r"/ui/$"))
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "skip"
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "main"
