"""The segment builder in a real headless Chromium: a segment built with the form in
German, its preview and plan following the form, saved; English at phone width."""

from __future__ import annotations

import re

import pytest

from dmp.access.users import Role
from dmp.cli import cli
from dmp.membership import definitions
from tests.factories import apply_segments, run_synth
from tests.ui.browser import WIDTHS, Browser
from tests.ui.conftest import PASSWORD

# No htmx request in flight and no swap settling (networkidle would not wait: the page's
# load reached it long before).
SETTLED = "() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')"


def test_a_segment_built_with_the_form_in_german(
    chromium: Browser, live_url: str, users, runner, redis
) -> None:
    """A marketer builds a nested segment with the form, sees the YAML, the preview and
    the plan follow each change, saves it and lands on the segment's page."""
    run_synth(runner, 80, 20)
    assert runner.invoke(cli, ["matrix", "build"]).exit_code == 0
    with chromium.page(live_url, language="de") as page:
        page.log_in(users[Role.MARKETER], PASSWORD)
        page.goto("/ui/segments/builder/")
        page.get_by_role("heading", name="Neues Segment").wait_for()
        page.locator("#preview .figure").wait_for()
        page.check("builder-new-de")
        page.get_by_label("Segment-ID").fill("heisse-leads")
        page.get_by_label("Name", exact=True).fill("Heiße Leads")
        page.select_option("#w-add", "number")
        page.get_by_role("button", name="Bedingung hinzufügen").last.click()
        page.locator("#w-1-value").wait_for()
        page.wait_for_function(SETTLED)  # a person types after the form is redrawn
        page.locator("#w-1-value").fill("10")
        page.get_by_role("button", name="Gruppe hinzufügen").last.click()
        page.locator("#w-2-0-kind").wait_for()
        page.select_option("#w-2-kind", "any")
        page.locator("#part-w-2.group-any").wait_for()
        page.select_option("#w-2-0-kind", "channel")
        page.locator("#w-2-0-value").wait_for()
        page.locator("#meet-w-2-0", has_text="erfüllen diese Bedingung").wait_for()
        page.locator("#plan", has_text="Würden hinzukommen").wait_for()
        # The YAML follows the check 300 ms after a change; the plan's text may still be
        # the last check's (a busy machine answered the channel's check later).
        page.wait_for_function("() => document.getElementById('yaml').value.includes('channel')")
        yaml = page.locator("#yaml").input_value()
        assert "id: heisse-leads" in yaml and "score: {gte: 10}" in yaml
        assert "- channel: email" in yaml
        page.locator("#meet-w-1", has_text="erfüllen diese Bedingung").wait_for()
        assert page.locator("#preview .figure").is_visible()
        page.check("builder-preview-de")
        page.get_by_role("button", name="Segment speichern").click()
        page.wait_for_url(re.compile(r"/ui/segments/heisse-leads$"))
        page.get_by_role("heading", name="Heiße Leads").first.wait_for()
    stored = definitions.get_segment(redis, "heisse-leads")
    assert stored is not None and stored.definition.name == "Heiße Leads"
    assert stored.definition.source["where"]["all"][2] == {"any": [{"channel": "email"}]}


def test_problems_and_kept_conditions_in_english_at_phone_width(
    chromium: Browser, live_url: str, users, redis
) -> None:
    """At phone width, a bad score is named beside its condition; a stored segment with a
    condition the form cannot show keeps it as a read-only block; no matrix: said so."""
    apply_segments(
        redis,
        "id: pdf\nname: PDF readers\n"
        "where: {all: [{tier: high}, {did: {property: format, eq: pdf}}]}",
    )
    expect = pytest.importorskip("playwright.sync_api").expect
    with chromium.page(live_url, width=WIDTHS["phone"]) as page:
        page.log_in(users[Role.MARKETER], PASSWORD)
        page.goto("/ui/segments/builder/pdf")
        page.get_by_text("The form cannot show this condition").wait_for()
        assert "property: format" in page.locator("#part-w-1 pre").inner_text()
        page.locator("#preview", has_text="No matrix has been built yet").wait_for()
        page.check("builder-edit-en-phone")
        page.select_option("#w-add", "number")
        page.get_by_role("button", name="Add condition").last.click()
        page.locator("#w-2-value").wait_for()
        page.wait_for_function(SETTLED)  # a person types after the form is redrawn
        page.locator("#w-2-value").fill("lots")
        expect(page.locator("#yaml")).to_have_value(re.compile(r"score: \{gte: lots\}"))
        page.locator("#err-w-2", has_text="expected a number").wait_for()
        assert "where.all[2].score.gte" in page.locator("#check-summary").inner_text()
        page.check("builder-problem-en-phone")


def test_the_estimate_is_replaced_by_the_exact_count(
    chromium: Browser, live_url: str, users, runner, redis, config, monkeypatch
) -> None:
    """Past EXACT_BELOW persons the page first shows an estimate from the sample (marked,
    with its margin), then, without a reload, the exact count the core computes."""
    import threading
    import time

    from dmp.membership import previewsample
    from dmp.membership.preview import preview
    from dmp.ui import builderlive
    from segments.definition import load_definitions

    run_synth(runner, 80, 20, seed=5)
    assert runner.invoke(cli, ["matrix", "build"]).exit_code == 0
    text = "id: known\nname: Known\nwhere: {all: [{tier: {gte: low}}]}"
    apply_segments(redis, text)
    monkeypatch.setattr(previewsample, "EXACT_BELOW", 0)
    monkeypatch.setattr(previewsample, "TARGET", 30)
    release, key = threading.Event(), f"blocker-{time.time_ns()}"
    builderlive.BACKGROUND.submit(key, lambda: release.wait(60) and {})  # busy till released
    while builderlive.BACKGROUND.running != key:
        time.sleep(0.01)
    try:
        with chromium.page(live_url) as page:
            page.log_in(users[Role.MARKETER], PASSWORD)
            page.goto("/ui/segments/builder/known")
            note = page.locator("#preview .estimate-note", has_text="exact count follows")
            note.wait_for()
            assert page.locator("#preview .figure.estimate").inner_text().startswith("≈")
            page.locator("#plan .estimate-note").wait_for()
            release.set()
            page.locator("#preview .figure:not(.estimate)").wait_for(timeout=30_000)
            (definition,) = load_definitions(text)
            expected = preview(redis, config, definition)["members"]
            assert page.locator("#preview .figure").inner_text() == f"{expected:,}"
            page.locator("#plan", has_text="computed in").wait_for(timeout=30_000)
            assert page.locator("#preview .estimate-note").count() == 0
    finally:
        release.set()
        builderlive.BACKGROUND.wait(60)
