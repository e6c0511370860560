"""The JS tag's server side: /dmp.js, CORS and /collect beacons."""

from __future__ import annotations

import json

import pytest

from dmp import keyspace
from dmp.identity import Identifier, IdKind
from dmp.profiles import find_person, get_person
from dmp.worker import status

ORIGIN = "https://www.acme.de"


def _beacon(key: str, events: list, consent=("analytics",), **extra) -> str:
    return json.dumps({"k": key, "consent": list(consent), "sentAt": 1, "events": events, **extra})


def _post(client, body, origin: str | None = ORIGIN):
    headers = {"Content-Type": "text/plain"}
    if origin:
        headers["Origin"] = origin
    return client.post("/collect", data=body, headers=headers)


def test_script_is_small_javascript(client):
    """/dmp.js is JavaScript under 5 KB, cacheable."""
    resp = client.get("/dmp.js")
    assert resp.status_code == 200 and resp.mimetype == "application/javascript"
    assert len(resp.data) < 5120 and b"/collect" in resp.data
    assert "max-age" in resp.headers["Cache-Control"]


def test_preflight_only_for_site_origins(client, site):
    """A CORS preflight is granted to a site's (sub)domain and refused to any other."""
    ok = client.options("/collect", headers={"Origin": ORIGIN})
    assert ok.status_code == 204 and ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert ok.headers["Access-Control-Allow-Credentials"] == "true"
    bad = client.options("/collect", headers={"Origin": "https://evil.example"})
    assert bad.status_code == 403 and bad.mimetype == "application/problem+json"
    assert "Access-Control-Allow-Origin" not in bad.headers


def test_consented_beacon_sets_cookie_and_makes_low_person(client, redis, write_key, drain):
    """A page view with analytics consent answers 204 with CORS and the dmp_uid cookie."""
    event = {
        "type": "page",
        "id": "evt-00000001",
        "url": "https://www.acme.de/crm",
        "title": "CRM",
        "topics": ["crm"],
        "ts": 1,
    }
    resp = _post(client, _beacon(write_key, [event]))
    assert resp.status_code == 204
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    uid = cookie.split(";")[0].split("=", 1)[1]
    drain()
    person = get_person(redis, find_person(redis, Identifier(IdKind.UID, uid)))
    assert person["tier"] == "low"
    page = next(t for t in person["touchpoints"] if t["event"] == "page")
    assert (page["url"], page["title"], page["topics"], page["source"]) == (
        "https://www.acme.de/crm",
        "CRM",
        ["crm"],
        "tag",
    )


def test_identify_under_consent_makes_medium(client, redis, write_key, drain):
    """identify with an email and analytics consent promotes the browser's person to medium."""
    _post(client, _beacon(write_key, [{"type": "page"}]))
    _post(client, _beacon(write_key, [{"type": "identify", "traits": {"email": "a@acme.de"}}]))
    drain()
    assert (
        get_person(redis, find_person(redis, Identifier(IdKind.EMAIL, "a@acme.de")))["tier"]
        == "medium"
    )


def test_identify_without_consent_keeps_no_email(client, redis, config, write_key, drain):
    """Without analytics consent an identify stores no email anywhere; it is counted only."""
    event = {"type": "identify", "traits": {"email": "secret@acme.de"}}
    resp = _post(client, _beacon(write_key, [event], consent=()))
    assert resp.status_code == 204 and "Set-Cookie" not in resp.headers
    assert b"secret@acme.de" not in json.dumps(redis.xrange(keyspace.STREAM)).encode()
    drain()
    assert status(redis)["events_aggregate"] == 1
    assert find_person(redis, Identifier(IdKind.EMAIL, "secret@acme.de")) is None
    assert not redis.keys("dmp:id:*")


def test_foreign_origin_is_refused_whole(client, redis, write_key):
    """A beacon from an origin outside the site's domains is refused and nothing stored."""
    resp = _post(client, _beacon(write_key, [{"type": "page"}]), origin="https://evil.example")
    assert resp.status_code == 403 and resp.mimetype == "application/problem+json"
    assert redis.xlen(keyspace.STREAM) == 0


@pytest.mark.parametrize(
    ("body", "status_code"),
    [
        ("{not json", 400),
        ("[]", 400),
        ('{"k": "wk_unknown", "events": [{"type": "page"}]}', 401),
        ("KEY:events-not-a-list", 400),
        ("KEY:event-not-an-object", 400),
        ("KEY:ts-a-string", 400),
        ("KEY:consent-not-a-list", 400),
        ("KEY:bad-type", 400),
        ("KEY:too-many", 400),
        ("KEY:oversize", 400),
    ],
)
def test_bad_beacons_are_4xx_problems(client, redis, write_key, body, status_code):
    """Malformed, wrong-typed, oversize or unauthorised beacons: 4xx problem+json, no hits."""
    cases = {
        "KEY:events-not-a-list": {"k": write_key, "events": {"type": "page"}},
        "KEY:event-not-an-object": {"k": write_key, "events": ["page"]},
        "KEY:ts-a-string": {"k": write_key, "events": [{"type": "page", "ts": "now"}]},
        "KEY:consent-not-a-list": {"k": write_key, "consent": "analytics", "events": [{}]},
        "KEY:bad-type": {"k": write_key, "events": [{"type": "alias"}]},
        "KEY:too-many": {"k": write_key, "events": [{"type": "page"}] * 51},
        "KEY:oversize": {"k": write_key, "events": [{"type": "page", "title": "x" * 70_000}]},
    }
    data = json.dumps(cases[body]) if body in cases else body
    resp = _post(client, data)
    assert resp.status_code == status_code and resp.mimetype == "application/problem+json"
    assert resp.get_json()["detail"]
    assert redis.xlen(keyspace.STREAM) == 0
    assert client.get("/healthz").status_code == 200
