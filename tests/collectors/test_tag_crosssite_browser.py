"""One visitor stays one person whatever the set-up, in a real headless Chromium: dmp on
another site than the page (the browser never returns dmp's cookie; the tag holds the uid),
and dmp on the page's own host name (dmp's cookie; ports do not matter)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dmp.access import sites
from dmp.ingest.worker import status
from dmp.people.identity import Identifier, IdKind
from dmp.people.profiles import find_person
from tests.chromium import page_server
from tests.collectors.browserpages import answered, dmp_cookie
from tests.factories import person_of, read_metric, scrape, stream_hits

PAGES = Path(__file__).parent / "pages_tag"
NOT_RETURNED = "dmp_cookie_not_returned_total"


@pytest.fixture
def dmp_port(collector) -> int:
    """Return the port dmp is served on (pages call it as localhost)."""
    return collector[1]


@pytest.fixture
def pages_port() -> Iterator[int]:
    """Serve tests/collectors/pages_tag on a free loopback port; return it."""
    with page_server(PAGES) as port:
        yield port


def _visit(tab, page_host: str, pages_port: int, dmp_port: int, key: str, redis, drain) -> str:
    """A visitor's journey: two pages, consent, a track and the identify; return the uid
    of the identify."""
    query = f"?dmp=http://localhost:{dmp_port}&key={key}"
    first, second = (
        f"http://{page_host}:{pages_port}/{p}{query}" for p in ("plain.html", "second.html")
    )
    assert answered(tab, lambda: tab.goto(first)) == 204
    assert answered(tab, lambda: tab.evaluate("dmp.consent(['analytics'])")) == 204
    assert answered(tab, lambda: tab.evaluate("dmp.track('whitepaper_download')")) == 204
    assert answered(tab, lambda: tab.goto(second)) == 204
    identify = "dmp.identify('Anna@Acme.de', {firstName: 'Anna'})"
    assert answered(tab, lambda: tab.evaluate(identify)) == 204
    uid = stream_hits(redis)[-1].uid
    drain()
    return uid


def _one_person_saw_everything(redis, uid: str) -> dict:
    """Return the visitor's person, checking that it holds the whole journey alone."""
    assert uid, "the identify carried no uid"
    person = person_of(redis, IdKind.UID, uid)
    assert person["tier"] == "medium"
    assert find_person(redis, Identifier(IdKind.EMAIL, "anna@acme.de")) == person["person_id"]
    events = sorted(t["event"] for t in person["touchpoints"] if t["type"] != "tier")
    assert events == ["consent", "identify", "page", "whitepaper_download"]
    page = next(t for t in person["touchpoints"] if t["event"] == "page")
    assert page["title"] == "Preise"
    assert person["identifiers"]["uid"] == [uid]
    assert status(redis)["persons"] == {"low": 0, "medium": 1, "high": 0}
    return person


def test_other_site_keeps_one_person_through_the_tag_held_uid(
    tab, redis, client, pages_port, dmp_port, drain
):
    """Page on 127.0.0.1, dmp on localhost (another site: the browser neither keeps nor
    sends dmp's SameSite=Lax cookie): the tag keeps the uid dmp answered in a cookie of
    the page's site, and the visitor stays one person across two pages, a track and the
    identify; every hit on the tag-held uid is counted."""
    site, key = sites.add_site(redis, "Acme Landing", ["127.0.0.1"])
    uid = _visit(tab, "127.0.0.1", pages_port, dmp_port, key, redis, drain)
    assert dmp_cookie(tab) is None  # dmp's own cookie never took: it is another site
    held = next(c for c in tab.context.cookies() if c["name"] == "_dmp_uid")
    assert (held["value"], held["domain"], held["sameSite"]) == (uid, "127.0.0.1", "Lax")
    assert not held["httpOnly"] and held["expires"] > 0  # a lasting cookie, set by script
    _one_person_saw_everything(redis, uid)
    # The consent beacon made the uid; the track, the second page view and the identify
    # came with the tag-held uid only.
    assert read_metric(scrape(client), NOT_RETURNED, site=site.site_id) == 3


def test_same_host_name_keeps_one_person_through_dmp_s_cookie(
    tab, redis, client, site, write_key, pages_port, dmp_port, drain
):
    """Page and dmp on localhost, different ports (cookies do not care about ports): dmp's
    own cookie comes back, the visitor is one person and nothing counts as not returned."""
    uid = _visit(tab, "localhost", pages_port, dmp_port, write_key, redis, drain)
    assert dmp_cookie(tab)["value"] == uid
    _one_person_saw_everything(redis, uid)
    assert read_metric(scrape(client), NOT_RETURNED, site=site[0].site_id) is None


def test_withdrawal_on_another_site_forgets_the_tag_held_uid(
    tab, redis, pages_port, dmp_port, drain
):
    """Withdrawn on another site: the tag sends its uid one last time for dmp to forget,
    and deletes its cookie; the uid no longer names the person."""
    _, key = sites.add_site(redis, "Acme Landing", ["127.0.0.1"])
    uid = _visit(tab, "127.0.0.1", pages_port, dmp_port, key, redis, drain)
    assert answered(tab, lambda: tab.evaluate("dmp.consent([])")) == 204
    assert not [c for c in tab.context.cookies() if c["name"] == "_dmp_uid"]
    drain()
    assert find_person(redis, Identifier(IdKind.UID, uid)) is None
