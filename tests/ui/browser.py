"""The UI in a real headless Chromium: pages that fail a test on any console error,
screenshots kept after the run, and axe-core's accessibility rules on every page."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chromium import NODE_MODULES, TIMEOUT_MS, launch

ROOT = Path(__file__).resolve().parent.parent.parent
AXE = NODE_MODULES / "axe-core" / "axe.min.js"
# Screenshots of every page the tests visit, kept after the run (tests/run.sh leaves them).
SHOTS = Path(os.environ.get("UI_SCREENSHOTS", ROOT / "build" / "screenshots"))
WIDTHS = {"desktop": 1280, "phone": 390}
ACCEPT = {"de": "de-DE,de;q=0.9", "en": "en-US,en;q=0.9"}
_BAD_IMPACT = ("serious", "critical")


class Browser:
    """One Chromium; :meth:`page` opens a checked page in a fresh context."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser

    @contextlib.contextmanager
    def page(self, base_url: str, *, width: int = WIDTHS["desktop"], language: str = "en"):
        """Yield a :class:`Page` on ``base_url``; on leaving, fail on any console error."""
        context = self.browser.new_context(
            base_url=base_url,
            viewport={"width": width, "height": 900},
            locale={"de": "de-DE", "en": "en-US"}[language],
            extra_http_headers={"Accept-Language": ACCEPT[language]},
        )
        context.set_default_timeout(TIMEOUT_MS)
        page = Page(context.new_page())
        try:
            yield page
            page.assert_no_console_errors()
        finally:
            context.close()


class Page:
    """A browser tab that notes every console error and uncaught exception."""

    def __init__(self, tab: Any) -> None:
        self.tab = tab
        self.errors: list[str] = []
        tab.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        tab.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tab, name)

    def assert_no_console_errors(self) -> None:
        """Fail if the browser logged an error (a CSP refusal, a 404, a script error)."""
        assert not self.errors, f"browser console errors: {self.errors}"

    def check(self, name: str) -> None:
        """Screenshot the page as ``<name>.png`` and hold it to axe-core's rules: no
        serious or critical violation, and no console error so far."""
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.tab.screenshot(path=str(SHOTS / f"{_file_name(name)}.png"), full_page=True)
        violations = axe_violations(self.tab)
        assert not violations, f"{name}: accessibility violations: {violations}"
        self.assert_no_console_errors()

    def log_in(self, email: str, password: str) -> None:
        """Log in through the form (from wherever the page is)."""
        self.tab.goto("/ui/login")
        self.tab.get_by_label(re.compile("^(Email|E-Mail)$")).fill(email)
        self.tab.get_by_label(re.compile("^(Password|Passwort)$")).fill(password)
        self.tab.get_by_role("button", name=re.compile("^(Log in|Anmelden)$")).click()
        self.tab.wait_for_url(re.compile(r"/ui/(?!login)"))


def axe_violations(tab: Any) -> list[str]:
    """Return axe-core's serious and critical violations on the tab's page, one line each."""
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: tests/run.sh installs it (npm ci in tests/ui)")
    # Injected by the test itself (the page's CSP does not apply to evaluate()).
    tab.evaluate(AXE.read_text())
    result = tab.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes'][:3]]}"
        for v in result["violations"]
        if v.get("impact") in _BAD_IMPACT
    ]


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")


@contextlib.contextmanager
def open_browser() -> Iterator[Browser]:
    """Start headless Chromium (the system's) through Playwright; close it after."""
    with launch() as browser:
        yield Browser(browser)
