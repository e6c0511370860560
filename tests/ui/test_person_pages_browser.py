"""The persons pages in a real headless Chromium, in German and English, at 1280 px and at
phone width: search by email, the person whole, the list behind a number, 'show more'."""

from __future__ import annotations

import re

import pytest

from dmp.access.users import Role
from tests.ui.browser import WIDTHS, Browser
from tests.ui.conftest import PASSWORD
from tests.ui.test_person_pages import make_anna


@pytest.fixture
def anna(redis, drain, runner, config, tmp_path) -> str:
    """Return the id of a person with every section filled (see make_anna)."""
    return make_anna(redis, drain, runner, config, tmp_path)


SECTIONS_DE = (
    "Kennungen",
    "Stufe und Phase",
    "Lead-Score",
    "Interessen",
    "Segmente",
    "Einwilligungen",
    "Zeitleiste",
)


def test_a_marketer_finds_a_person_by_email_in_german(
    chromium: Browser, live_url: str, users, anna: str
) -> None:
    """Log in, search by email, land on the person with every section; the list behind a
    number and the empty search pass axe-core too."""
    with chromium.page(live_url, language="de") as page:
        page.log_in(users[Role.MARKETER], PASSWORD)
        page.goto("/ui/persons/")
        page.check("persons-search-de")
        page.get_by_label("E-Mail, Cookie-ID, CRM-ID oder Personen-ID").fill("Anna@acme.de")
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(f"/ui/persons/{anna}$"))
        for name in SECTIONS_DE:
            assert page.get_by_role("heading", name=name, exact=True).is_visible(), name
        assert page.get_by_text("Widerrufen").first.is_visible()
        page.check("person-de")
        page.goto("/ui/persons/?q=niemand@acme.de")
        assert page.get_by_role("status").inner_text().startswith("Keine Person")
        page.check("persons-search-nothing-de")
        page.goto("/ui/persons/?tier=high&segment=known")
        page.get_by_role("link", name=anna).click()
        page.wait_for_url(re.compile(f"/ui/persons/{anna}$"))


def test_the_list_and_the_person_at_phone_width_in_english(
    chromium: Browser, live_url: str, users, anna: str
) -> None:
    """At 390 px the list and the person page are usable and pass axe-core; 'show more'
    is reachable by keyboard."""
    with chromium.page(live_url, width=WIDTHS["phone"]) as page:
        page.log_in(users[Role.VIEWER], PASSWORD)
        page.goto("/ui/persons/?tier=high")
        assert page.get_by_role("link", name=anna).is_visible()
        page.check("persons-list-en-phone")
        page.goto(f"/ui/persons/{anna}")
        assert page.get_by_role("heading", name="Timeline").is_visible()
        page.check("person-en-phone")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= WIDTHS["phone"] + 1, f"the page is {width} px wide"
