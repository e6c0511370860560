"""The segment pages in a real headless Chromium: list, one segment, version diff and
overlap in English and German, at desktop and phone width; deleting a segment."""

from __future__ import annotations

import re

import pytest

from dmp.access.users import Role
from dmp.membership import definitions, runs
from tests.factories import apply_segments, run_synth
from tests.ui.browser import WIDTHS, Browser
from tests.ui.conftest import PASSWORD
from tests.ui.test_segment_pages import LONG_NAME, SEGMENTS


@pytest.fixture
def world(runner, redis, config) -> None:
    """Two segments (one with a 200-character name) run twice, one changed between."""
    run_synth(runner, 80, 20, 5)
    text = SEGMENTS + f"---\nid: long\nname: {LONG_NAME[:200]}\nwhere: {{score: {{gte: 0}}}}\n"
    apply_segments(redis, text)
    runs.run(redis, config)
    apply_segments(redis, text.replace("{tier: {gte: medium}}", "{tier: {gte: high}}"))
    runs.run(redis, config)


def test_the_empty_list_in_german_at_phone_width(chromium: Browser, live_url: str, users):
    """Without segments a German marketer on a phone reads what a segment is and finds
    the button to make one."""
    with chromium.page(live_url, width=WIDTHS["phone"], language="de") as page:
        page.log_in(users[Role.MARKETER], PASSWORD)
        page.goto("/ui/segments/")
        assert page.get_by_role("heading", name="Noch keine Segmente").is_visible()
        assert page.get_by_role("link", name="Neues Segment").first.is_visible()
        page.check("segments-empty-de-phone")


def test_a_marketer_walks_the_segment_pages(chromium: Browser, live_url: str, users, world):
    """List → segment → changes between versions → overlap, in English at 1280 px."""
    with chromium.page(live_url) as page:
        page.log_in(users[Role.MARKETER], PASSWORD)
        page.goto("/ui/segments/")
        assert page.locator("svg.spark").count() == 3
        page.check("segments-list-en")
        page.get_by_role("link", name="Known by email", exact=True).click()
        page.get_by_role("heading", name="Known by email").wait_for()
        assert "tier: {gte: high}" in page.locator("pre.yaml").inner_text()
        page.check("segments-detail-en")
        page.get_by_role("link", name="Changes from v1").click()
        page.wait_for_url(re.compile(r"/diff\?from=1&to=2"))
        assert page.locator("tr.added").count() == 1 and page.locator("tr.removed").count() == 1
        page.check("segments-diff-en")
        page.goto("/ui/segments/overlap")
        assert page.locator("td.cell").count() == 9
        page.check("segments-overlap-en")


def test_the_pages_in_german_on_a_phone(chromium: Browser, live_url: str, users, world):
    """Every segment page in German at 390 px: numbers and dates in German, no page wider
    than the screen but the tables, which scroll."""
    with chromium.page(live_url, width=WIDTHS["phone"], language="de") as page:
        page.log_in(users[Role.VIEWER], PASSWORD)
        for path, name, heading in (
            ("/ui/segments/", "segments-list-de-phone", "Segmente"),
            ("/ui/segments/known", "segments-detail-de-phone", "Known by email"),
            ("/ui/segments/known/diff", "segments-diff-de-phone", "Änderungen an Known by email"),
            ("/ui/segments/overlap", "segments-overlap-de-phone", "Überschneidung der Segmente"),
            ("/ui/segments/long", "segments-long-name-de-phone", LONG_NAME[:200].strip()),
        ):
            page.goto(path)
            assert page.get_by_role("heading", name=heading, exact=True).is_visible()
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= WIDTHS["phone"], (path, wide)
            page.check(name)
        assert page.get_by_role("button", name="Löschen").count() == 0


def test_a_marketer_deletes_a_segment_after_confirming(
    chromium: Browser, live_url: str, users, world, redis
):
    """Delete asks first; declined, nothing happens; accepted, the list says it is gone."""
    with chromium.page(live_url, language="de") as page:
        page.log_in(users[Role.MARKETER], PASSWORD)
        page.goto("/ui/segments/active")
        page.once("dialog", lambda dialog: dialog.dismiss())
        page.get_by_role("button", name="Löschen").click()
        assert definitions.get_segment(redis, "active") is not None
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Löschen").click()
        page.wait_for_url(re.compile(r"/ui/segments/$"))
        assert page.get_by_role("status").inner_text().startswith("Das Segment active")
        assert definitions.get_segment(redis, "active") is None
        page.check("segments-deleted-de")


def test_the_keyboard_reaches_the_segment_and_its_versions(
    chromium: Browser, live_url: str, users, world
):
    """From the list, Tab reaches a segment's link and Enter opens it; the version
    selects and the compare button are reachable and work without a mouse."""
    with chromium.page(live_url) as page:
        page.log_in(users[Role.ADMIN], PASSWORD)
        page.goto("/ui/segments/")
        link = page.get_by_role("link", name="Known by email", exact=True)
        for _ in range(40):
            page.keyboard.press("Tab")
            if page.evaluate("document.activeElement.textContent") == "Known by email":
                break
        assert link.evaluate("el => el === document.activeElement")
        page.keyboard.press("Enter")
        page.get_by_role("heading", name="Known by email").wait_for()
        page.get_by_label("Compare version").focus()
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r"/diff\?from=1&to=2"))
        page.check("segments-diff-keyboard-en")
