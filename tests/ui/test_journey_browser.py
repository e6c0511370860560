"""What issue 15 is done by: a marketer who has never seen the CLI logs in, finds a
person, builds and saves a segment with a preview and a plan, and sends it to a
destination, all in the browser, in German."""

from __future__ import annotations

import re
import threading

from playwright.sync_api import expect

from dmp.access.users import Role
from dmp.membership import runs
from exporters import schedule
from tests.exporters.test_sync import ingest_and_run, person
from tests.ui.browser import Browser
from tests.ui.conftest import PASSWORD


def test_a_marketer_finds_a_person_builds_a_segment_and_sends_it(
    chromium: Browser, live_url: str, users, redis, config, tmp_path
) -> None:
    """Log in, search a person by email, build a segment with the form (preview and plan
    shown before saving), save it, add a file destination for it, sync now: the file
    holds the segment's members with ads consent, and the page says how many were added."""
    hits = [person("ada@acme.de"), person("bob@acme.de"), person("eve@acme.de", ads=False)]
    ingest_and_run(redis, config, *hits)  # persons, a matrix build and a first run
    folder = tmp_path / "crm-drop"
    with chromium.page(live_url, language="de") as page:
        page.log_in(users[Role.MARKETER], PASSWORD)
        page.get_by_role("heading", name="Übersicht").wait_for()
        page.check("journey-1-overview-de")

        page.get_by_role("link", name="Personen", exact=True).click()
        page.locator("input[name=q]").fill("ADA@acme.de")
        page.locator("input[name=q]").press("Enter")
        page.get_by_text("ada@acme.de").first.wait_for()
        assert re.search(r"/ui/persons/[0-9a-f]+$", page.url), page.url
        page.check("journey-2-person-de")

        page.get_by_role("link", name="Segmente", exact=True).click()
        page.get_by_role("link", name="Neues Segment").first.click()
        page.get_by_role("heading", name="Neues Segment").wait_for()
        page.get_by_label("Segment-ID").fill("bekannte-kontakte")
        page.get_by_label("Name", exact=True).fill("Bekannte Kontakte")
        expect(page.locator("#yaml")).to_have_value(re.compile(r"id: bekannte-kontakte"))
        page.locator("#preview .figure").wait_for()  # tier ≥ medium: the form's first condition
        page.locator("#plan", has_text="Würden hinzukommen").wait_for()
        assert page.locator("#preview .figure").inner_text().strip() == "3"
        page.check("journey-3-builder-de")
        page.get_by_role("button", name="Segment speichern").click()
        page.wait_for_url(re.compile(r"/ui/segments/bekannte-kontakte$"))
        page.get_by_role("heading", name="Bekannte Kontakte").first.wait_for()
        page.check("journey-4-segment-de")

        runs.run(redis, config)  # the worker's schedule runs the new segment within a minute
        page.get_by_role("link", name="Ziele", exact=True).click()
        page.get_by_role("link", name="Ziel hinzufügen").first.click()
        page.get_by_role("link", name="Datei", exact=True).click()
        page.get_by_label("Name", exact=True).fill("crm-drop")
        page.get_by_label("Bekannte Kontakte", exact=True).check()
        page.get_by_label("Ordner").fill(str(folder))
        page.get_by_role("button", name="Speichern").click()
        page.wait_for_url(re.compile(r"/ui/destinations/crm-drop$"))
        page.get_by_role("button", name="Jetzt synchronisieren").click()
        page.locator("#sync-state").get_by_text("angefordert", exact=True).wait_for()
        assert schedule.look(redis, config, threading.Event()) == 1  # as the worker does
        added = page.locator("section[aria-labelledby=sync-title] td[data-label='Hinzugefügt']")
        added.wait_for(timeout=15_000)
        assert added.inner_text() == "2"  # eve gave no ads consent
        page.check("journey-5-destination-synced-de")
    latest = (folder / "bekannte-kontakte" / "LATEST").read_text().strip()
    snapshot = (folder / "bekannte-kontakte" / latest).read_text()
    assert "ada@acme.de" in snapshot and "bob@acme.de" in snapshot
    assert "eve@acme.de" not in snapshot
