"""The overview in a real headless Chromium: in English and German, at desktop and phone
width, fresh and with data; its numbers lead to the persons behind them."""

from __future__ import annotations

import re

from dmp.access.users import Role
from tests.ui.browser import WIDTHS, Browser
from tests.ui.conftest import PASSWORD
from tests.ui.test_overview import world  # noqa: F401 (the data fixture)


def test_the_overview_with_data_in_english_and_german(
    chromium: Browser,
    live_url: str,
    users,
    world,  # noqa: F811
) -> None:
    """With persons, a build, a run and a sync, every card shows its chart and numbers,
    in English at 1280 px and in German at phone width; a tier's number opens its persons."""
    with chromium.page(live_url) as page:
        page.log_in(users[Role.MARKETER], PASSWORD)
        page.goto("/ui/")
        for name in ("Involvement", "Funnel", "Touchpoints per day", "Top content topics"):
            assert page.get_by_role("heading", name=name).is_visible()
        assert page.locator("figure.chart svg").count() == 3
        page.check("overview-data-en")
        page.locator('a[href="/ui/persons/?tier=medium"]').click()
        page.wait_for_url(re.compile(r"/ui/persons/\?tier=medium$"))
    with chromium.page(live_url, width=WIDTHS["phone"], language="de") as page:
        page.log_in(users[Role.VIEWER], PASSWORD)
        page.goto("/ui/")
        page.get_by_role("heading", name="Kontaktpunkte pro Tag").wait_for()
        assert page.get_by_role("link", name="Alle Segmente").is_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= WIDTHS["phone"], f"the page is {width} px wide at phone width"
        page.check("overview-data-de-phone")


def test_a_fresh_installation_in_german_says_what_to_do(
    chromium: Browser, live_url: str, users
) -> None:
    """Before any data every card's empty state shows, at both widths, in German."""
    for width in ("desktop", "phone"):
        with chromium.page(live_url, width=WIDTHS[width], language="de") as page:
            page.log_in(users[Role.ADMIN], PASSWORD)
            page.goto("/ui/")
            page.get_by_text("Noch keine Besucher.").wait_for()
            assert page.get_by_text("Noch keine Matrix berechnet.").is_visible()
            assert page.get_by_text("Noch kein Segmentlauf.").is_visible()
            page.check(f"overview-empty-de-{width}")


def test_the_keyboard_reaches_a_number_and_opens_its_persons(
    chromium: Browser,
    live_url: str,
    users,
    world,  # noqa: F811
) -> None:
    """Tab alone reaches the high tier's count (with a visible focus); Enter opens it."""
    with chromium.page(live_url) as page:
        page.log_in(users[Role.MARKETER], PASSWORD)
        page.goto("/ui/")
        for _ in range(40):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.getAttribute('href')") == (
                "/ui/persons/?tier=high"
            ):
                break
        else:
            raise AssertionError("Tab never reached the high tier's count")
        page.check("overview-keyboard-focus")
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r"/ui/persons/\?tier=high$"))
