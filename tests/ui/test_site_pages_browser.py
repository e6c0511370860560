"""The sites and keys pages in a real headless Chromium, in English and German."""

from __future__ import annotations

import re

from dmp.access import sites
from dmp.access.users import Role
from tests.ui.browser import WIDTHS, Browser
from tests.ui.conftest import PASSWORD


def test_an_admin_adds_a_site_and_creates_and_revokes_a_key(
    chromium: Browser, live_url: str, users, redis
) -> None:
    """Empty state, a new site with its snippets, a key shown once (not after a reload)
    and revoked; every page passes axe-core without console errors."""
    with chromium.page(live_url) as page:
        page.log_in(users[Role.ADMIN], PASSWORD)
        page.goto("/ui/sites/")
        page.get_by_role("heading", name="No site yet").wait_for()
        page.check("sites-empty-en")
        page.get_by_label("Site name").fill("Acme GmbH with a rather long name " + "x" * 20)
        page.get_by_label("Domains").fill("acme.de, www.acme.de")
        page.get_by_role("button", name="Add the site").click()
        page.get_by_role("status").wait_for()
        key = sites.public_write_key(redis, sites.list_sites(redis)[0].site_id)
        assert key in page.locator("pre").first.inner_text()
        page.check("sites-list-en")
        page.get_by_role("link", name="API keys").click()
        page.check("keys-empty-en")
        page.get_by_label("Scope").select_option("admin")
        page.get_by_label("Key name").fill("ops")
        page.get_by_role("button", name="Create the key").click()
        secret = page.locator("#new-key-value").inner_text().strip()
        assert secret.startswith("dmp_ad_")
        page.check("keys-new-en")
        page.reload()
        page.get_by_role("heading", name="API keys").wait_for()
        assert secret not in page.content()
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name=re.compile("^Revoke the key")).click()
        page.get_by_role("status").wait_for()
        page.check("keys-revoked-en")


def test_a_viewer_sees_the_snippets_in_german_on_a_phone(
    chromium: Browser, live_url: str, users, redis
) -> None:
    """On a phone in German, a viewer sees the site's snippets and no key management."""
    sites.add_site(redis, "Beta AG", ["beta.de"])
    with chromium.page(live_url, language="de", width=WIDTHS["phone"]) as page:
        page.log_in(users[Role.VIEWER], PASSWORD)
        page.goto("/ui/sites/")
        page.get_by_role("heading", name="Beta AG").wait_for()
        assert page.get_by_role("button", name="Tag kopieren").is_visible()
        assert page.get_by_role("link", name="API-Schlüssel").count() == 0
        page.check("sites-list-de-phone")
