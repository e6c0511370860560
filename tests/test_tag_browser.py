"""The JS tag in a real headless Chromium, on a page served from localhost."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from dmp import keyspace
from dmp.identity import Identifier, IdKind
from dmp.profiles import find_person, get_person
from dmp.worker import status

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and not os.environ.get("DMP_REQUIRE_BROWSER"):
    pytest.skip("Chromium is not installed (tests/run.sh installs it)", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")

FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGE = """<!doctype html>
<html><head><title>CRM-Leitfaden</title>
<meta name="dmp:topics" content="crm, erp">
<script>window.dmp = window.dmp || {q: []};
  ["consent", "track", "identify", "page"].forEach(function (m) {
    window.dmp[m] = window.dmp[m] || function () { window.dmp.q.push([m, arguments]); };
  });</script>
<script async src="http://localhost:%(port)d/dmp.js" data-key="%(key)s"></script>
</head><body><h1>CRM</h1></body></html>
"""


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        """Keep the test output clean: the page server logs nothing."""


@pytest.fixture
def site_page(tmp_path: Path, live_url: str, write_key: str) -> Iterator[int]:
    """Serve a page embedding the tag from its own localhost port; return that port."""
    port = urlsplit(live_url).port
    (tmp_path / "index.html").write_text(PAGE % {"port": port, "key": write_key})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()


@pytest.fixture
def browser() -> Iterator[object]:
    """Return a headless Chromium."""
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield chromium
        chromium.close()


def _collect(page):
    return page.expect_response(lambda r: r.url.endswith("/collect"), timeout=10_000)


def _uid(context) -> str | None:
    return next((c["value"] for c in context.cookies() if c["name"] == "dmp_uid"), None)


def test_page_view_without_consent_counts_only_in_aggregate(browser, site_page, redis, drain):
    """Before consent the tag sends the page view, which only counts in aggregate."""
    context = browser.new_context()
    page = context.new_page()
    with _collect(page) as beacon:
        page.goto(f"http://localhost:{site_page}/index.html")
    assert beacon.value.status == 204
    assert _uid(context) is None
    drain()
    assert status(redis)["events_aggregate"] == 1 and status(redis)["events_stored"] == 0
    context.close()


def test_consent_track_and_identify_climb_to_high(
    browser, site_page, redis, drain, client, admin_key
):
    """consent → cookie and a low person; track keeps url/title/topics; identify → high."""
    context = browser.new_context()
    page = context.new_page()
    with _collect(page):
        page.goto(f"http://localhost:{site_page}/index.html")
    with _collect(page) as beacon:
        page.evaluate(
            "dmp.consent(['analytics', 'ads']);dmp.track('whitepaper_download', {format: 'pdf'})"
        )
    assert beacon.value.status == 204
    uid = _uid(context)
    assert uid, "the collector set no dmp_uid cookie"
    assert page.evaluate("JSON.parse(localStorage.getItem('dmp_consent'))") == ["analytics", "ads"]
    drain()
    person = get_person(redis, find_person(redis, Identifier(IdKind.UID, uid)))
    assert person["tier"] == "low"
    download = next(t for t in person["touchpoints"] if t["event"] == "whitepaper_download")
    assert download["url"] == f"http://localhost:{site_page}/index.html"
    assert download["topics"] == ["crm", "erp"] and download["source"] == "tag"

    with _collect(page):
        page.evaluate("dmp.identify('Anna@Acme.de', {firstName: 'Anna', phone: '+49 171 1234567'})")
    drain()
    resp = client.get(
        "/api/v1/persons",
        query_string={"uid": uid},
        headers={"Authorization": f"Bearer {admin_key}"},
    )
    body = resp.get_json()
    assert body["tier"] == "high" and body["identifiers"]["email"] == ["anna@acme.de"]
    assert body["traits"]["firstName"] == "Anna"
    # A reload keeps consent (localStorage) and cookie: the same person, now with a page view.
    with _collect(page):
        page.reload()
    drain()
    again = get_person(redis, find_person(redis, Identifier(IdKind.UID, uid)))
    pages = [t for t in again["touchpoints"] if t["event"] == "page"]
    assert again["person_id"] == body["person_id"] and pages
    assert pages[0]["title"] == "CRM-Leitfaden"
    context.close()


def test_foreign_origin_is_refused(browser, site_page, redis, drain):
    """A page on an origin outside the site's domains gets its beacons refused."""
    context = browser.new_context()
    page = context.new_page()
    refused = page.expect_event(
        "requestfailed", lambda r: r.url.endswith("/collect"), timeout=10_000
    )
    with refused as failed:
        page.goto(f"http://127.0.0.1:{site_page}/index.html")  # 127.0.0.1 is not localhost
    assert failed.value.method == "POST"  # sent, answered 403 without CORS: the page sees none
    drain()
    assert redis.xlen(keyspace.STREAM) == 0 and status(redis)["events_aggregate"] == 0
    context.close()
