"""The destinations pages in a real headless Chromium, in German and English: a marketer
adds a file destination for a segment, syncs it now (the worker's look runs it), sees the
added count, and dry-runs it; every page passes axe-core, also at phone width."""

from __future__ import annotations

import re
import threading

import pytest

from dmp.access.users import Role
from exporters import schedule
from tests.exporters.test_sync import ingest_and_run, person
from tests.factories import apply_segments
from tests.ui.browser import WIDTHS, Browser
from tests.ui.conftest import PASSWORD

SEGMENT = """
id: known
name: Bekannte Kontakte aus dem Maschinenbau mit Interesse an Automatisierung und Robotik
where: {tier: {gte: medium}}
"""


@pytest.fixture
def members(redis, config) -> None:
    """Store the segment ``known`` and run it over three persons (two with ads consent)."""
    apply_segments(redis, SEGMENT)
    hits = (person("ada@acme.de"), person("bob@acme.de"), person("eve@acme.de", ads=False))
    ingest_and_run(redis, config, *hits)


def test_a_marketer_sends_a_segment_to_a_file_in_german(
    chromium: Browser, live_url: str, users, members, redis, config, tmp_path
) -> None:
    """Empty list, kind picker, a refused and a good form, sync now (requested, then the
    worker's sync shown by the page's own poll), the dry run; each page checked."""
    folder = tmp_path / "out"
    with chromium.page(live_url, language="de") as page:
        page.log_in(users[Role.MARKETER], PASSWORD)
        page.goto("/ui/destinations/")
        page.get_by_role("heading", name="Noch keine Ziele").wait_for()
        page.check("destinations-empty-de")
        page.get_by_role("link", name="Ziel hinzufügen").click()
        page.get_by_role("heading", name="Ziel hinzufügen").wait_for()
        page.check("destinations-kinds-de")
        page.get_by_role("link", name="Datei", exact=True).click()
        page.get_by_label("Name", exact=True).wait_for()
        page.check("destinations-form-de")
        page.get_by_label("Name", exact=True).fill("CRM Übergabe")
        page.get_by_label(re.compile("^Bekannte Kontakte")).check()
        page.get_by_label("Ordner").fill(str(folder))
        page.get_by_role("button", name="Speichern").click()
        page.get_by_role("alert").wait_for()
        assert "markierten Felder" in page.get_by_role("alert").inner_text()
        page.errors.clear()  # the browser logs the 422 itself
        page.check("destinations-form-refused-de")
        page.get_by_label("Name", exact=True).fill("crm-drop")
        page.get_by_role("button", name="Speichern").click()
        page.wait_for_url(re.compile(r"/ui/destinations/crm-drop$"))
        page.check("destination-new-de")
        page.get_by_role("button", name="Jetzt synchronisieren").click()
        page.locator("#sync-state").get_by_text("angefordert", exact=True).wait_for()
        page.check("destination-requested-de")
        assert schedule.look(redis, config, threading.Event()) == 1  # as the worker does
        # The page's poll sees the report and reloads the page by itself.
        by_segment = page.locator("section[aria-labelledby=sync-title]")
        by_segment.wait_for(timeout=15_000)
        assert by_segment.locator("td[data-label='Hinzugefügt']").inner_text() == "2"
        assert page.locator("#sync-state").get_by_text("ok", exact=True).is_visible()
        page.check("destination-synced-de")
        page.get_by_role("button", name="Testlauf").click()
        page.get_by_role("heading", name="Testlauf von crm-drop").wait_for()
        assert "Nichts zu senden" in page.inner_text("main")
        page.check("destination-dry-run-de")
    assert (folder / "known" / "LATEST").exists()


def test_the_pages_in_english_and_at_phone_width(
    chromium: Browser, live_url: str, users, members, redis, config, tmp_path
) -> None:
    """The list, a synced destination, its form and a dry run with rows to add, in English
    and on a phone; a viewer's page has no change buttons."""
    from exporters import settings

    found = settings.validate(redis, "crm-drop", "file", ["known"], 3600, {"folder": str(tmp_path)})
    settings.save(redis, found)
    assert schedule.look(redis, config, threading.Event()) == 1
    ingest_and_run(redis, config, person("kim@acme.de"))
    with chromium.page(live_url, width=WIDTHS["phone"], language="de") as page:
        page.log_in(users[Role.MARKETER], PASSWORD)
        page.goto("/ui/destinations/")
        page.get_by_role("link", name="crm-drop").wait_for()
        page.check("destinations-list-de-phone")
        page.get_by_role("link", name="crm-drop").click()
        page.get_by_role("heading", name="Letzte Synchronisierungen").wait_for()
        page.check("destination-de-phone")
        page.get_by_role("link", name="Bearbeiten").click()
        page.get_by_role("heading", name="crm-drop ändern").wait_for()
        page.check("destination-edit-de-phone")
    with chromium.page(live_url) as page:
        page.log_in(users[Role.ADMIN], PASSWORD)
        page.goto("/ui/destinations/")
        page.get_by_role("link", name="crm-drop").wait_for()
        page.check("destinations-list-en")
        page.get_by_role("link", name="crm-drop").click()
        page.check("destination-en")
        page.get_by_role("button", name="Dry run").click()
        page.get_by_role("heading", name="Dry run of crm-drop").wait_for()
        assert "kim@acme.de" in page.inner_text("main")
        page.check("destination-dry-run-en")
        page.goto("/ui/destinations/new?kind=meta")
        page.get_by_label("Environment variable holding the access token").wait_for()
        page.check("destinations-form-meta-en")
    with chromium.page(live_url) as page:
        page.log_in(users[Role.VIEWER], PASSWORD)
        page.goto("/ui/destinations/crm-drop")
        page.get_by_role("button", name="Dry run").wait_for()
        assert page.get_by_role("button", name="Sync now").count() == 0
        page.check("destination-viewer-en")
