"""The tag following the page's consent banner in a real headless Chromium: an IAB TCF v2.2
CMP made of IAB's reference code (@iabtcf/cmpapi, @iabtcf/core), and Google Consent Mode v2."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dmp.ingest.worker import status
from dmp.people.identity import Identifier, IdKind
from dmp.people.profiles import find_person
from tests.chromium import page_server
from tests.collectors.browserpages import answered, dmp_cookie
from tests.factories import consent_of, person_of, stream_hits

PAGES = Path(__file__).parent / "pages_tag"
ALL = "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]"


@pytest.fixture
def page_url(collector, write_key: str) -> Iterator[str]:
    """Serve tests/collectors/pages_tag; return a format string of a page's URL on
    localhost (the site's domain, dmp's host too), given its name and query."""
    with page_server(PAGES) as port:
        dmp = f"http://localhost:{collector[1]}"
        yield f"http://localhost:{port}/{{}}?dmp={dmp}&key={write_key}{{}}"


def _open(tab, url: str) -> None:
    """Open a page and wait for its page view's answer (204)."""
    assert answered(tab, lambda: tab.goto(url)) == 204


def _decide(tab, purposes: str) -> None:
    """The visitor decides in the CMP's banner; wait for the tag's consent beacon (204)."""
    assert answered(tab, lambda: tab.evaluate(f"choose({purposes})")) == 204


def _grant(tab, page_url: str, redis, drain) -> dict:
    """First visit: the banner shows, the visitor accepts all; return their person."""
    _open(tab, page_url.format("cmp.html", ""))
    assert stream_hits(redis)[0].uid == ""  # before the decision: only in aggregate
    _decide(tab, ALL)
    cookie = dmp_cookie(tab)
    assert cookie is not None, "the tag's consent beacon set no dmp_uid cookie"
    drain()
    return person_of(redis, IdKind.UID, cookie["value"])


def test_tcf_consent_granted_makes_a_person_with_ads_and_analytics(tab, page_url, redis, drain):
    """Accept-all in the CMP: a low person with ads and analytics consent, proven by the
    CMP's id and the TC string's hash; the tag says where its consent came from."""
    person = _grant(tab, page_url, redis, drain)
    assert person["tier"] == "low"
    for category in ("ads", "analytics"):
        record = consent_of(person, category)
        assert record["granted"] is True and record["version"].startswith("tcf:300:")
    assert tab.evaluate("dmp.status()") == {
        "granted": ["analytics", "ads"],
        "source": "tcf",
        "tcf": True,
        "held": True,
    }
    assert tab.console == []


def test_tcf_consent_changed_withdraws_ads_keeps_analytics(tab, page_url, redis, drain):
    """The visitor later withdraws the ad purposes: the same person keeps analytics and
    loses ads, at once."""
    person = _grant(tab, page_url, redis, drain)
    _decide(tab, "[1, 7, 9]")
    drain()
    now = person_of(redis, IdKind.UID, dmp_cookie(tab)["value"])
    assert now["person_id"] == person["person_id"]
    assert consent_of(now, "analytics")["granted"] is True
    assert consent_of(now, "ads")["granted"] is False
    assert tab.evaluate("dmp.granted()") == ["analytics"]


def test_tcf_consent_withdrawn_drops_the_cookie_at_once(tab, page_url, redis, drain):
    """The visitor withdraws everything: dmp's cookie and the tag's are gone at once, the
    uid no longer names the person, and later hits only count in aggregate."""
    _grant(tab, page_url, redis, drain)
    uid = dmp_cookie(tab)["value"]
    _decide(tab, "[]")
    assert dmp_cookie(tab) is None and tab.evaluate("document.cookie") == ""
    drain()
    assert find_person(redis, Identifier(IdKind.UID, uid)) is None
    before = status(redis)["events_aggregate"]
    assert answered(tab, lambda: tab.evaluate("dmp.track('after_withdrawal')")) == 204
    after = stream_hits(redis)[-1]
    assert (after.event, after.uid, after.ip) == ("after_withdrawal", "", "")
    drain()
    assert status(redis)["events_aggregate"] == before + 1


def test_returning_visitor_s_page_view_waits_for_the_cmp(tab, page_url, redis, drain):
    """A decision taken earlier (the CMP loads it): the page view itself goes out under it,
    with its TC string; the page's own dmp.consent cannot override the CMP."""
    _open(tab, page_url.format("cmp.html", "&tc=1,7,9"))
    # One beacon: the consent the tag learnt (new to it: the CMP's own cookie had it), and
    # the page view, both under the CMP's decision.
    hits = stream_hits(redis)
    assert [h.event for h in hits] == ["consent", "page"]
    page = hits[1]
    assert page.uid and page.uid == hits[0].uid and page.consent_version.startswith("tcf:300:")
    assert page.consent == {"analytics": True, "ads": False, "email": False}
    tab.evaluate("dmp.consent(['analytics', 'ads', 'email'])")
    assert tab.evaluate("dmp.status().source") == "tcf"
    assert tab.evaluate("dmp.granted()") == ["analytics"]


def test_cmp_saying_gdpr_does_not_apply_leaves_consent_to_the_page(tab, page_url, redis):
    """gdprApplies false: TCF says nothing, the page's own dmp.consent decides."""
    _open(tab, page_url.format("cmp.html", "&tc=null"))
    assert stream_hits(redis)[0].uid == ""
    assert answered(tab, lambda: tab.evaluate("dmp.consent(['analytics'])")) == 204
    consent = stream_hits(redis)[-1]
    assert consent.event == "consent" and consent.uid and consent.consent_version == ""
    assert tab.evaluate("dmp.status().source") == "page"


def test_consent_mode_default_denied_then_granted(tab, page_url, redis, drain):
    """Google Consent Mode v2: denied by default (aggregate only, dmp.consent cannot
    override it), then analytics granted, then the three ad signals: one person gaining
    analytics, then ads."""
    _open(tab, page_url.format("consentmode.html", ""))
    assert stream_hits(redis)[0].uid == ""
    tab.evaluate("dmp.consent(['analytics'])")
    assert tab.evaluate("dmp.status()")["source"] == "consent mode"
    grant = "gtag('consent', 'update', {analytics_storage: 'granted'})"
    assert answered(tab, lambda: tab.evaluate(grant)) == 204
    uid = dmp_cookie(tab)["value"]
    drain()
    person = person_of(redis, IdKind.UID, uid)
    assert consent_of(person, "analytics")["granted"] is True
    assert consent_of(person, "ads")["granted"] is False
    ads = (
        "gtag('consent', 'update', {ad_storage: 'granted', ad_user_data: 'granted',"
        " ad_personalization: 'granted'})"
    )
    assert answered(tab, lambda: tab.evaluate(ads)) == 204
    drain()
    person = person_of(redis, IdKind.UID, uid)
    assert consent_of(person, "ads")["granted"] is True
    assert tab.evaluate("dmp.granted()") == ["analytics", "ads"]
    # gtag's dataLayer still works as before: every push is kept.
    assert tab.evaluate("dataLayer.length") == 4
