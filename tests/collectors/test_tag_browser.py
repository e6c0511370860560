"""The JS tag in a real headless Chromium, on pages served from localhost."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from dmp.ingest.worker import status
from dmp.people.identity import Identifier, IdKind
from dmp.people.profiles import find_person
from dmp.storage import keyspace
from tests.chromium import page_server
from tests.collectors.browserpages import answered, dmp_cookie
from tests.factories import bearer, consent_of, person_of, read_metric, scrape, stream_hits

STUB = """<script>window.dmp = window.dmp || {q: []};
  ["consent", "track", "identify", "page"].forEach(function (m) {
    window.dmp[m] = window.dmp[m] || function () { window.dmp.q.push([m, arguments]); };
  });</script>"""
PAGE = """<!doctype html>
<html><head><title>CRM-Leitfaden</title>
<meta name="dmp:topics" content="crm, erp">
%(stub)s
<script>%(early)s</script>
<script async src="%(collector)s/dmp.js" data-key="%(key)s"></script>
</head><body><h1>CRM</h1></body></html>
"""


@pytest.fixture
def pages(tmp_path: Path, collector, write_key: str) -> Iterator[int]:
    """Serve the test pages (one plain, one with calls queued before load); return the port."""
    base = f"http://localhost:{collector[1]}"
    early = "dmp.consent(['analytics']); dmp.track('early_bird', {n: 1});"
    for name, script in (("index.html", ""), ("queued.html", early)):
        html = PAGE % {"stub": STUB, "early": script, "collector": base, "key": write_key}
        (tmp_path / name).write_text(html)
    with page_server(tmp_path) as port:
        yield port


def _consented_visit(page, pages: int, redis, drain) -> str:
    """Open the page, grant analytics consent, track a download; return the cookie's uid."""
    assert answered(page, lambda: page.goto(f"http://localhost:{pages}/index.html")) == 204
    track = "dmp.consent(['analytics']); dmp.track('whitepaper_download', {format: 'pdf'})"
    assert answered(page, lambda: page.evaluate(track)) == 204
    cookie = dmp_cookie(page)
    assert cookie is not None, "the collector set no dmp_uid cookie"
    drain()
    return cookie["value"]


def test_page_view_without_consent_counts_only_in_aggregate(tab, pages, collector, redis, drain):
    """Before consent the tag's page view reaches dmp but sets no cookie and makes no person."""
    assert answered(tab, lambda: tab.goto(f"http://localhost:{pages}/index.html")) == 204
    assert collector[0].wait_for(1) == [204] and redis.xlen(keyspace.partition(0).stream) == 1
    assert dmp_cookie(tab) is None
    drain()
    counts = status(redis)
    assert counts["events_aggregate"] == 1 and counts["events_stored"] == 0
    assert counts["persons"] == {"low": 0, "medium": 0, "high": 0}
    assert not redis.keys("dmp:id:*")
    day_counts = redis.hgetall(
        next(iter(redis.scan_iter(keyspace.partition(0).aggregate("*", "*"))))
    )
    assert day_counts[f"url:http://localhost:{pages}/index.html"] == "1"
    assert day_counts["topic:crm"] == day_counts["topic:erp"] == "1"


def test_consent_and_track_make_a_low_person(tab, pages, redis, drain):
    """consent + track: an HttpOnly Lax cookie for the collector and a low person."""
    uid = _consented_visit(tab, pages, redis, drain)
    cookie = dmp_cookie(tab)
    assert cookie["domain"] == "localhost" and cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert tab.evaluate("JSON.parse(localStorage.getItem('dmp_consent'))") == ["analytics"]
    person = person_of(redis, IdKind.UID, uid)
    assert person["tier"] == "low" and consent_of(person, "analytics")["granted"] is True
    download = next(t for t in person["touchpoints"] if t["event"] == "whitepaper_download")
    assert download["url"] == f"http://localhost:{pages}/index.html"
    assert download["title"] == "CRM-Leitfaden"
    assert download["topics"] == ["crm", "erp"] and download["source"] == "tag"
    # The page view before consent stays anonymous: it is no touchpoint of the person.
    assert [t["event"] for t in person["touchpoints"]].count("page") == 0


def test_identify_with_phone_makes_the_person_high(tab, pages, redis, drain, client, admin_key):
    """identify(email, {phone}) after consent: the admin API shows the person high."""
    uid = _consented_visit(tab, pages, redis, drain)
    identify = "dmp.identify('Anna@Acme.de', {firstName: 'Anna', phone: '+49 171 1234567'})"
    assert answered(tab, lambda: tab.evaluate(identify)) == 204
    drain()
    resp = client.get(
        "/api/v1/persons",
        query_string={"email": "anna@acme.de"},
        headers=bearer(admin_key),
    )
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["tier"] == "high"
    assert body["person_id"] == person_of(redis, IdKind.UID, uid)["person_id"]
    assert body["identifiers"]["email"] == ["anna@acme.de"]
    assert body["identifiers"]["phone"] == ["+491711234567"]
    assert body["traits"]["firstName"] == "Anna"


def test_withdrawn_consent_drops_the_cookie_at_once(tab, pages, redis, drain):
    """dmp.consent([]) tells dmp at once: the cookie is expired and unlinked from the person."""
    uid = _consented_visit(tab, pages, redis, drain)
    assert answered(tab, lambda: tab.evaluate("dmp.consent([])")) == 204
    assert dmp_cookie(tab) is None
    drain()
    assert find_person(redis, Identifier(IdKind.UID, uid)) is None
    # The consent stays withdrawn on the next page: its view sets no cookie again.
    assert answered(tab, lambda: tab.reload()) == 204
    assert dmp_cookie(tab) is None


def test_events_before_consent_keep_the_consent_they_happened_under(
    tab, pages, collector, redis, drain
):
    """A track made before dmp.consent() goes out anonymous, in its own beacon, not resent."""
    tab.goto(f"http://localhost:{pages}/index.html")
    collector[0].wait_for(1)
    tab.evaluate("dmp.track('before'); dmp.consent(['analytics']); dmp.track('after')")
    assert collector[0].wait_for(3) == [204, 204, 204]
    hits = stream_hits(redis)
    assert [(h.event, bool(h.uid)) for h in hits] == [
        ("page", False),
        ("before", False),
        ("consent", True),
        ("after", True),
    ]
    drain()
    points = person_of(redis, IdKind.UID, hits[-1].uid)["touchpoints"]
    assert sorted(t["event"] for t in points if t["type"] != "tier") == ["after", "consent"]
    assert status(redis)["events_aggregate"] == 2


def test_calls_queued_before_load_are_sent(tab, pages, redis, drain):
    """Calls made through the stub before dmp.js loads are replayed, consent first."""
    assert answered(tab, lambda: tab.goto(f"http://localhost:{pages}/queued.html")) == 204
    cookie = dmp_cookie(tab)
    assert cookie is not None
    drain()
    points = person_of(redis, IdKind.UID, cookie["value"])["touchpoints"]
    assert sorted(t["event"] for t in points if t["type"] != "tier") == [
        "consent",
        "early_bird",
        "page",
    ]


def test_foreign_origin_is_refused(tab, pages, collector, redis, drain, client, caplog):
    """A page on an origin outside the site's domains gets its beacons refused, nothing
    kept; the console shows why, /metrics counts each refusal and the log says it once."""
    caplog.set_level(logging.WARNING, logger="collectors.refusals")
    with tab.expect_console_message(lambda m: m.text.startswith("dmp:")) as warned:
        tab.goto(f"http://127.0.0.1:{pages}/index.html")  # 127.0.0.1 is not the domain localhost
    assert collector[0].wait_for(1) == [403]
    assert warned.value.type == "warning"
    assert "Origin not allowed" in warned.value.text
    assert f"http://127.0.0.1:{pages} is not a domain of the site" in warned.value.text
    tab.evaluate("dmp.consent(['analytics']); dmp.track('whitepaper_download')")
    assert collector[0].wait_for(2) == [403, 403]
    assert redis.xlen(keyspace.partition(0).stream) == 0 and dmp_cookie(tab) is None
    drain()
    assert status(redis)["events_aggregate"] == 0 and not redis.keys("dmp:person:*")
    refused = {"collector": "tag", "outcome": "origin_not_allowed"}
    assert read_metric(scrape(client), "dmp_hits_total", **refused) == 2
    logged = [r for r in caplog.records if f"127.0.0.1:{pages}" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.WARNING
    assert "acme.de, localhost" in logged[0].getMessage()
