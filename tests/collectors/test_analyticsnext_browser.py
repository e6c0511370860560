"""Segment's analytics.js 2.0 (the UMD bundle of @segment/analytics-next, from npm) in a
real headless Chromium, on a page of another origin than dmp, pointed at dmp by its
``cdnURL`` alone.

dmp runs on 127.0.0.1, the page on localhost (one of the test site's domains): two sites
for the browser. The page stands for a site that already has its consent set-up: a small
enrichment plugin, registered with ``analytics.register``, stamps
``context.consent.categoryPreferences`` on every event exactly as Segment's consent
wrapper (@segment/analytics-consent-tools) does. That belongs to the site, not to dmp.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from dmp.access import sites
from dmp.ingest.eventlog import scan_events
from dmp.people.identity import IdKind
from tests.chromium import TIMEOUT_MS, npm_file, page_server, serving
from tests.factories import consent_of, person_of, stream_hits

BUNDLE = "/node_modules/@segment/analytics-next/dist/umd/index.js"
PAGE = """<!doctype html>
<html><head><title>CRM-Leitfaden</title><link rel="icon" href="data:,">
<script src="%(bundle)s"></script>
<script>
  // The site's consent set-up, as Segment's consent wrapper stamps it.
  function stamp(ctx) {
    ctx.updateEvent("context.consent", {
      categoryPreferences: {Analytics: true, Advertising: true, Functional: true}
    });
    return ctx;
  }
  var consentStamp = {
    name: "Consent Stamp", type: "enrichment", version: "1.0.0",
    isLoaded: function () { return true; }, load: function () { return Promise.resolve(); },
    track: stamp, identify: stamp, page: stamp, group: stamp, alias: stamp, screen: stamp
  };
  window.analytics = AnalyticsNext.AnalyticsBrowser.load(
    {writeKey: %(key)s, cdnURL: %(cdn)s}%(options)s);
  window.ready = analytics.register(consentStamp).then(function () { return true; });
</script>
</head><body><h1>CRM</h1></body></html>
"""
# Three calls, in order; each resolves once its delivery is done (in standard mode, once
# dmp's answer was read), to the errors its context logged (a resend is planned on one).
CALLS = """async () => {
  const calls = [
    () => analytics.identify("u-77", {email: "Anna@Example.com", firstName: "Anna"}),
    () => analytics.track("Whitepaper Downloaded", {title: "CRM guide", topics: ["crm"]}),
    () => analytics.page(),
  ];
  const errors = [];
  for (const call of calls) {
    const ctx = await call();
    errors.push(...ctx.logs().filter((l) => l.level === "error").map((l) => l.message));
    if (ctx.failedDelivery()) errors.push("failed delivery");
  }
  return errors;
}"""
BATCHING = {"integrations": {"Segment.io": {"deliveryStrategy": {
    "strategy": "batching", "config": {"size": 3, "timeout": 500}}}}}  # fmt: skip


class Collector:
    """dmp over a real socket, noting every request it answered (method, path, status)."""

    def __init__(self, app) -> None:
        self.app = app
        self.answers: list[tuple[str, str, int]] = []
        self._seen = threading.Condition()

    def __call__(self, environ, start_response):
        """Serve the app; note the request once the app answered it."""

        def noting(status_line, headers, exc_info=None):
            with self._seen:
                method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
                self.answers.append((method, path, int(status_line[:3])))
                self._seen.notify_all()
            return start_response(status_line, headers, exc_info)

        return self.app(environ, noting)

    def posts(self) -> list[tuple[str, int]]:
        """Return the path and status of every POST answered so far."""
        with self._seen:
            return [(path, status) for method, path, status in self.answers if method == "POST"]

    def wait_for_posts(self, count: int) -> list[tuple[str, int]]:
        """Return the first ``count`` POSTs, waiting up to the browser timeout for them."""
        with self._seen:
            arrived = self._seen.wait_for(
                lambda: sum(m == "POST" for m, _, _ in self.answers) >= count, TIMEOUT_MS / 1000
            )
        assert arrived, f"{self.posts()} reached dmp; {count} POSTs were awaited"
        return self.posts()[:count]


@pytest.fixture
def collector(app) -> Iterator[tuple[Collector, str]]:
    """Serve dmp on a free port of 127.0.0.1; return its recorder and base URL."""
    recorder = Collector(app)
    with serving(make_server("127.0.0.1", 0, recorder, threaded=True)) as port:
        yield recorder, f"http://127.0.0.1:{port}"


@pytest.fixture
def pages(tmp_path: Path, collector, redis, write_key: str) -> Iterator[str]:
    """Serve the pages on localhost (standard delivery, batching, and one with the key of
    a site on other domains); return its base URL."""
    npm_file("@segment/analytics-next/dist/umd/index.js")
    _, elsewhere = sites.add_site(redis, "Elsewhere", ["elsewhere.example"])
    for name, key, options in (
        ("index.html", write_key, ""),
        ("batching.html", write_key, ", " + json.dumps(BATCHING)),
        ("elsewhere.html", elsewhere, ""),
    ):
        html = PAGE % {
            "bundle": BUNDLE,
            "key": json.dumps(key),
            "cdn": json.dumps(collector[1]),
            "options": options,
        }
        (tmp_path / name).write_text(html)
    with page_server(tmp_path, "localhost") as port:
        yield f"http://localhost:{port}"


class Tab:
    """A page in a fresh browser context, with what it logged, failed and asked for."""

    def __init__(self, page) -> None:
        self.page = page
        self.console: list[str] = []
        self.failed: list[str] = []
        self.requested: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.console.append(f"pageerror: {exc}"))
        page.on("requestfailed", lambda r: self.failed.append(f"{r.url} {r.failure}"))
        page.on("request", lambda r: self.requested.append(r.url))

    def _console(self, message) -> None:
        if message.type in ("error", "warning"):
            self.console.append(f"{message.type}: {message.text}")


@pytest.fixture
def tab(chromium) -> Iterator[Tab]:
    """Return a recording tab in a fresh context (no cookies, no localStorage)."""
    context = chromium.new_context()
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield Tab(page)
    context.close()


def _only_the_two_servers(tab: Tab, pages: str, dmp: str) -> None:
    strangers = [u for u in tab.requested if not u.startswith((pages + "/", dmp + "/"))]
    assert strangers == [], f"the page asked other hosts: {strangers}"


def _one_person_with_all_three(redis, config, drain) -> dict:
    """Check the stream holds each event once and the log shows them as browser events of
    one person; return that person."""
    hits = stream_hits(redis)
    assert sorted(h.type for h in hits) == ["identify", "page", "track"]
    assert len({h.event_id for h in hits}) == 3  # each messageId once: nothing resent
    assert all(not h.trusted for h in hits)  # the public write key: a claim
    drain()
    rows = scan_events(config.events_dir).collect().to_dicts()
    assert sorted(r["type"] for r in rows) == ["identify", "page", "track"]
    assert {r["channel"] for r in rows} == {"browser"} and {r["source"] for r in rows} == {"api"}
    assert len({r["person_id"] for r in rows}) == 1 and rows[0]["person_id"]
    anna = person_of(redis, IdKind.EMAIL, "anna@example.com")
    assert anna["person_id"] == rows[0]["person_id"]
    assert person_of(redis, IdKind.USER, "u-77")["person_id"] == anna["person_id"]
    (anonymous_id,) = {h.anonymous_id for h in hits}
    assert person_of(redis, IdKind.ANON, anonymous_id)["person_id"] == anna["person_id"]
    assert anna["tier"] == "medium" and anna["traits"]["firstName"] == "Anna"
    assert consent_of(anna, "analytics", "email:anna@example.com")["granted"] is True
    return anna


def test_identify_track_and_page_reach_dmp_once_each(
    tab, pages, collector, redis, config, drain, write_key
):
    """Loaded with only writeKey and cdnURL, analytics.js fetches its settings from dmp and
    posts identify, track and page to /v1/i, /v1/t and /v1/p: each is read as a success by
    the page (no error, no resend), stored once and lands on one person; the page asks no
    host but its own and dmp."""
    recorder, dmp = collector
    page = tab.page
    page.goto(f"{pages}/index.html")
    assert page.evaluate("window.ready") is True
    assert page.evaluate(CALLS) == []
    assert recorder.wait_for_posts(3) == [("/v1/i", 200), ("/v1/t", 200), ("/v1/p", 200)]
    settings = [a for a in recorder.answers if a[1].endswith("/settings")]
    assert settings == [("GET", f"/v1/projects/{write_key}/settings", 200)]
    assert tab.console == [] and tab.failed == []
    _only_the_two_servers(tab, pages, dmp)
    anna = _one_person_with_all_three(redis, config, drain)
    track = next(t for t in anna["touchpoints"] if t["event"] == "Whitepaper Downloaded")
    assert track["url"] == f"{pages}/index.html" and track["topics"] == ["crm"]
    assert recorder.posts() == [("/v1/i", 200), ("/v1/t", 200), ("/v1/p", 200)]


def test_batching_posts_one_batch_to_v1_b(tab, pages, collector, redis, config, drain):
    """With analytics.js's batching delivery (3 events a batch), the three calls arrive in
    one POST /v1/b that the page reads as a success: stored once each, one person."""
    recorder, dmp = collector
    page = tab.page
    page.goto(f"{pages}/batching.html")
    assert page.evaluate("window.ready") is True
    with page.expect_event("requestfinished", lambda r: r.url == f"{dmp}/v1/b"):
        assert page.evaluate(CALLS) == []
    assert recorder.wait_for_posts(1) == [("/v1/b", 200)]
    assert tab.console == [] and tab.failed == []
    _only_the_two_servers(tab, pages, dmp)
    _one_person_with_all_three(redis, config, drain)
    assert recorder.posts() == [("/v1/b", 200)]


def test_a_page_of_another_site_sees_why_in_its_console(tab, pages, collector, redis):
    """A page whose origin is not one of the key's site's domains: the settings answer is
    a 403 the page can read, so analytics.js logs the problem's text to the console (no
    bare CORS error); nothing is posted or stored."""
    recorder, _ = collector
    page = tab.page
    with page.expect_event("console", lambda m: "is not a domain of the site" in m.text):
        page.goto(f"{pages}/elsewhere.html")
    assert not any("CORS" in line for line in tab.console), tab.console
    settings = [a for a in recorder.answers if a[1].endswith("/settings")]
    assert [status for _, _, status in settings] == [403]
    assert recorder.posts() == [] and stream_hits(redis) == []
