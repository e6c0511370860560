"""Undoing a merge gives both persons back what they had (issue 13)."""

from __future__ import annotations

import pytest

from dmp.cli import main
from dmp.people.identity import IdKind
from dmp.people.profiles import get_person
from dmp.storage import keyspace
from tests.factories import NOW, bearer, consent_of, make_hit, make_identify, person_of, send_hits


@pytest.fixture
def merged(redis, drain) -> tuple[str, str]:
    """A browser (cookie c9, two page views, ads consent) merged into a known lead by a
    sign-up claim. Returns (browser person id, lead id)."""
    send_hits(redis, make_identify("lea@acme.de", firstName="Lea"))
    send_hits(redis, make_hit(uid="c9", url="https://acme.de/preise", timestamp=NOW - 9000))
    send_hits(redis, make_hit(uid="c9", url="https://acme.de/demo", timestamp=NOW - 5000))
    drain()
    browser = person_of(redis, IdKind.UID, "c9")["person_id"]
    lead = person_of(redis, IdKind.EMAIL, "lea@acme.de")["person_id"]
    send_hits(redis, make_identify("lea@acme.de", uid="c9", trusted=False, nickname="L"))
    drain()
    assert person_of(redis, IdKind.UID, "c9")["person_id"] == lead
    return browser, lead


def _pages(person: dict) -> list[str]:
    return sorted(t["url"] for t in person["touchpoints"] if t.get("type") == "page")


def test_unmerge_gives_the_browser_back_its_cookie_consent_and_timeline(
    main_argv, redis, merged, capsys
):
    """`dmp persons unmerge` on the merged-away id: the cookie leads to the browser person
    again with its ads consent and page views; the lead keeps its email and trait, and
    each has the tier its own facts give."""
    browser, lead = merged
    main([*main_argv, "persons", "unmerge", browser])
    assert f"person {browser} is separate from {lead}" in capsys.readouterr().out
    back = person_of(redis, IdKind.UID, "c9")
    assert back["person_id"] == browser and back["tier"] == "low"
    assert _pages(back) == ["https://acme.de/demo", "https://acme.de/preise"]
    assert consent_of(back, "ads", "uid:c9")["granted"] is True
    lead_now = get_person(redis, lead)
    assert lead_now["tier"] == "medium" and "uid" not in lead_now["identifiers"]
    assert lead_now["traits"]["firstName"] == "Lea" and _pages(lead_now) == []
    assert consent_of(lead_now, "ads", "uid:c9") is None
    assert browser not in redis.smembers(keyspace.person(lead, "merged"))
    reasons = [e["reason"] for _, e in redis.xrange(keyspace.MERGES)]
    assert reasons[-1] == "unmerged"
    with pytest.raises(SystemExit) as exited:  # nothing left to undo
        main([*main_argv, "persons", "unmerge", browser])
    assert exited.value.code == 2 and "not a merged-away person" in capsys.readouterr().err


def test_the_api_unmerges_and_refuses_what_is_no_merge(client, redis, admin_key, merged, drain):
    """POST /api/v1/persons/<id>/unmerge: 202 queued with no worker, applied by the next
    one; a person that is no merged-away id is a 404 problem."""
    browser, lead = merged
    resp = client.post(f"/api/v1/persons/{lead}/unmerge", headers=bearer(admin_key))
    assert resp.status_code == 404 and resp.mimetype == "application/problem+json"
    bad = client.post("/api/v1/persons/nothex/unmerge", headers=bearer(admin_key))
    assert bad.status_code == 400
    from dmp.privacy import requests

    requests.WAIT_SECONDS, before = 0.2, requests.WAIT_SECONDS
    try:
        resp = client.post(f"/api/v1/persons/{browser}/unmerge", headers=bearer(admin_key))
    finally:
        requests.WAIT_SECONDS = before
    assert resp.status_code == 202
    drain()
    assert person_of(redis, IdKind.UID, "c9")["person_id"] == browser
