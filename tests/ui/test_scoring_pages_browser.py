"""The scoring pages in a real headless Chromium: the model, live validation, the plan."""

from __future__ import annotations

from dmp.access.users import Role
from dmp.matrix import builds
from dmp.storage import keyspace
from tests.ui.browser import WIDTHS, Browser
from tests.ui.conftest import PASSWORD
from tests.ui.test_scoring_pages import MODEL, built  # noqa: F401 (the fixture)


def test_a_marketer_validates_plans_and_applies_a_model(
    chromium: Browser,
    live_url: str,
    users,
    redis,
    built,  # noqa: F811
) -> None:
    """The model page, the editor's live check naming the path, the plan's tables, and
    applying; every page passes axe-core without console errors."""
    with chromium.page(live_url) as page:
        page.log_in(users[Role.MARKETER], PASSWORD)
        page.goto("/ui/scoring/")
        page.get_by_role("heading", name="Fit: who they are").wait_for()
        page.check("scoring-en")
        page.get_by_role("link", name="Edit the model").click()
        editor = page.get_by_label("The model (YAML)")
        editor.fill(MODEL.replace("points: 40", "points: lots"))
        page.locator("#model-check .error").wait_for()
        assert "activity.rules[0].points" in page.locator("#model-check").inner_text()
        page.check("scoring-edit-invalid-en")
        editor.fill(MODEL.replace("score_gte: 60", "score_gte: 0"))
        page.locator("#model-check .good").wait_for()
        page.get_by_role("button", name="Compute the plan").click()
        page.get_by_role("heading", name="Plan: what this model changes").wait_for()
        assert "1 change stage" in page.locator("#plan").inner_text()
        page.check("scoring-plan-en")
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Apply the model").click()
        page.get_by_role("status").wait_for()
        assert "score_gte: 0" in redis.get(keyspace.SCORING_MODEL)
        page.check("scoring-applied-en")


def test_a_viewer_reads_the_model_in_german_on_a_phone(
    chromium: Browser, live_url: str, users, redis, config
) -> None:
    """In German on a phone, a viewer sees the default model and no edit button."""
    builds.build(redis, config)
    with chromium.page(live_url, language="de", width=WIDTHS["phone"]) as page:
        page.log_in(users[Role.VIEWER], PASSWORD)
        page.goto("/ui/scoring/")
        page.get_by_role("heading", name="Passung: wer sie sind").wait_for()
        assert page.get_by_role("link", name="Modell bearbeiten").count() == 0
        page.check("scoring-de-phone")
        page.goto("/ui/scoring/edit")
        page.get_by_role("button", name="Vorschau berechnen").click()
        page.get_by_role("heading", name="Vorschau: was dieses Modell ändert").wait_for()
        page.check("scoring-plan-de-phone")
