"""The JS tag's server side: /dmp.js, CORS and /collect beacons."""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import uuid
from pathlib import Path

import pytest

from collectors import cookie, refusals, tag, tcfpurposes
from dmp.app import create_app
from dmp.ingest.worker import status
from dmp.people.identity import Identifier, IdKind
from dmp.people.profiles import find_person, get_person
from dmp.storage import keyspace
from tests.factories import consent_of, cookie_uid, person_of, read_metric, scrape, stream_hits

ORIGIN = "https://www.acme.de"
PROBLEM = "application/problem+json"
_TAG_REFUSED = {"collector": "tag", "outcome": "origin_not_allowed"}


def _beacon(key: str, events: list, consent=("analytics",), **extra) -> str:
    return json.dumps({"k": key, "consent": list(consent), "sentAt": 1, "events": events, **extra})


def _post(client, body: str | bytes, origin: str | None = ORIGIN, **headers):
    headers = {"Content-Type": "text/plain", **headers}
    if origin:
        headers["Origin"] = origin
    return client.post("/collect", data=body, headers=headers)


def _redis_text(redis) -> str:
    """Return every key and value in Redis as one string, to search for what must not be."""
    parts = []
    for key in redis.scan_iter():
        value = {
            "string": lambda k: redis.get(k),
            "hash": lambda k: redis.hgetall(k),
            "set": lambda k: redis.smembers(k),
            "zset": lambda k: redis.zrange(k, 0, -1),
            "list": lambda k: redis.lrange(k, 0, -1),
            "stream": lambda k: redis.xrange(k),
        }[redis.type(key)](key)
        parts.append(f"{key!r}={value!r}")
    return "\n".join(parts)


def test_script_is_small_javascript(client):
    """/dmp.js is served as JavaScript, under 3 KB gzipped (8 KB plain), cacheable,
    posting to /collect."""
    resp = client.get("/dmp.js")
    assert resp.status_code == 200
    assert resp.mimetype in ("application/javascript", "text/javascript")
    assert len(resp.get_data()) < 8192 and "Content-Encoding" not in resp.headers
    assert int(resp.headers["Content-Length"]) == len(resp.get_data())
    assert b"/collect" in resp.data and b"dmp:topics" in resp.data
    assert "max-age" in resp.headers["Cache-Control"]
    zipped = client.get("/dmp.js", headers={"Accept-Encoding": "gzip, deflate, br"})
    assert zipped.headers["Content-Encoding"] == "gzip" and len(zipped.get_data()) < 3072
    assert gzip.decompress(zipped.get_data()) == resp.get_data()
    assert "Accept-Encoding" in zipped.headers["Vary"]


def test_script_carries_the_tcf_purpose_rules_of_the_settings(app, config):
    """The served tag holds the settings' TCF rules (one place: collectors.tcfpurposes)."""
    assert (
        tcfpurposes.of_config(config).for_tag().encode()
        in app.test_client().get("/dmp.js").get_data()
    )
    assert tag.RULES_PLACEHOLDER.encode() not in app.test_client().get("/dmp.js").get_data()
    other = create_app(dataclasses.replace(config, tcf_ads="1,2/4", tcf_vendor_id=755))
    try:
        served = other.test_client().get("/dmp.js").get_data()
    finally:
        other.extensions["dmp"].appender.close()
    assert b'{"ads":[[1],[2,4]],"analytics":[[1],[7,9]],"vendor":755}' in served


def test_preflight_only_for_site_origins(client, site):
    """A CORS preflight is granted to a site's (sub)domain and refused to any other, in a
    problem the page can read."""
    ok = client.options("/collect", headers={"Origin": ORIGIN})
    assert ok.status_code == 204 and ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert ok.headers["Access-Control-Allow-Credentials"] == "true"
    assert "POST" in ok.headers["Access-Control-Allow-Methods"]
    for origin in ("https://evil.example", "https://acme.de.evil.example", "null"):
        bad = client.options("/collect", headers={"Origin": origin})
        assert bad.status_code == 403 and bad.mimetype == PROBLEM, origin
        assert bad.headers["Access-Control-Allow-Origin"] == origin
        assert "Access-Control-Allow-Methods" not in bad.headers


def test_foreign_origin_is_refused_whole(client, redis, site, write_key, caplog):
    """A beacon from an origin outside the site's domains is refused 403 and nothing
    stored; the page can read why, the refusal is counted and logged once a minute."""
    caplog.set_level(logging.WARNING, logger=refusals.__name__)
    evil = f"https://evil-{uuid.uuid4().hex[:8]}.example"  # logged once a minute per origin
    for _ in range(3):
        resp = _post(client, _beacon(write_key, [{"type": "page"}]), origin=evil)
        assert resp.status_code == 403 and resp.mimetype == PROBLEM
        assert resp.headers["Access-Control-Allow-Origin"] == evil
        assert resp.headers["Access-Control-Allow-Credentials"] == "true"
        assert "Set-Cookie" not in resp.headers and cookie.ECHO_HEADER not in resp.headers
    problem = resp.get_json()
    assert problem["title"] == "Origin not allowed" and evil in problem["detail"]
    assert redis.xlen(keyspace.partition(0).stream) == 0
    warned = [r.getMessage() for r in caplog.records if evil in r.getMessage()]
    assert len(warned) == 1 and "acme.de, localhost" in warned[0]
    assert site[0].site_id in warned[0]
    assert read_metric(scrape(client), "dmp_hits_total", **_TAG_REFUSED) == 3


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
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    drain()
    person = person_of(redis, IdKind.UID, cookie_uid(resp))
    assert person["tier"] == "low"
    page = next(t for t in person["touchpoints"] if t["event"] == "page")
    assert (page["url"], page["title"], page["topics"], page["source"]) == (
        "https://www.acme.de/crm",
        "CRM",
        ["crm"],
        "tag",
    )


def test_beacon_without_consent_sets_no_cookie(client, redis, write_key, drain):
    """A page view without analytics consent sets no cookie and counts only in aggregate."""
    resp = _post(client, _beacon(write_key, [{"type": "page"}], consent=("ads",)))
    assert resp.status_code == 204 and "Set-Cookie" not in resp.headers
    assert stream_hits(redis)[0].uid == "" and stream_hits(redis)[0].ip == ""
    drain()
    assert status(redis)["events_aggregate"] == 1
    assert status(redis)["persons"] == {"low": 0, "medium": 0, "high": 0}


def test_identify_under_consent_makes_medium(client, redis, write_key, drain):
    """identify with an email and analytics consent promotes the browser's person to medium."""
    first = _post(client, _beacon(write_key, [{"type": "page"}]))
    event = {"type": "identify", "traits": {"email": "A@Acme.de", "firstName": "Anna"}}
    assert _post(client, _beacon(write_key, [event])).status_code == 204
    drain()
    by_email = find_person(redis, Identifier(IdKind.EMAIL, "a@acme.de"))
    assert by_email is not None
    assert find_person(redis, Identifier(IdKind.UID, cookie_uid(first))) == by_email
    person = get_person(redis, by_email)
    assert person["tier"] == "medium" and person["traits"]["firstName"] == "Anna"


def test_identify_without_consent_keeps_no_email(client, redis, config, write_key, drain):
    """Without analytics consent an identify stores no email anywhere; it is counted only."""
    event = {"type": "identify", "traits": {"email": "secret@acme.de", "phone": "+4930123456"}}
    resp = _post(client, _beacon(write_key, [event], consent=()))
    assert resp.status_code == 204 and "Set-Cookie" not in resp.headers
    assert redis.xlen(keyspace.partition(0).stream) == 1
    assert (
        b"secret@acme.de"
        not in json.dumps(redis.xrange(keyspace.partition(0).stream), default=str).encode()
    )
    drain()
    assert status(redis)["events_aggregate"] == 1 and status(redis)["events_stored"] == 0
    assert find_person(redis, Identifier(IdKind.EMAIL, "secret@acme.de")) is None
    assert not redis.keys("dmp:id:*") and not redis.keys("dmp:person:*")
    stored = _redis_text(redis)
    assert "aggregate" in stored and "secret" not in stored and "4930123456" not in stored
    files = [p for p in Path(config.data_dir).rglob("*") if p.is_file()]
    assert not any(b"secret@acme.de" in p.read_bytes() for p in files)


def test_beacon_without_consent_drops_an_existing_cookie(client, redis, write_key, drain):
    """A beacon that comes with the cookie but without analytics consent expires the cookie."""
    first = _post(client, _beacon(write_key, [{"type": "page"}]))
    uid = cookie_uid(first)
    drain()
    assert find_person(redis, Identifier(IdKind.UID, uid)) is not None
    withdrawn = {"type": "track", "event": "consent", "props": {"granted": []}}
    resp = _post(client, _beacon(write_key, [withdrawn], consent=()))
    assert resp.status_code == 204
    assert "Max-Age=0" in resp.headers["Set-Cookie"] and cookie_uid(resp) == ""
    drain()
    assert find_person(redis, Identifier(IdKind.UID, uid)) is None


def test_event_time_is_skew_corrected_and_never_future(client, redis, write_key):
    """ts is corrected by the browser's clock skew (sentAt − ts), capped at receipt time."""
    events = [{"type": "page", "ts": 1_000_000}, {"type": "page", "ts": 1_009_000}]
    assert _post(client, _beacon(write_key, events, sentAt=1_005_000)).status_code == 204
    earlier, later = stream_hits(redis)
    assert earlier.received_at - earlier.timestamp == 5_000
    assert later.timestamp == later.received_at
    old = [{"type": "page", "ts": 1}]
    assert _post(client, _beacon(write_key, old, sentAt=10**12)).status_code == 204
    oldest = stream_hits(redis)[2]
    assert oldest.received_at - oldest.timestamp == tag.MAX_AGE_MS


BAD_BEACONS = {
    "malformed JSON": lambda k: '{"k": "' + k + '", "events": [',
    "not an object": lambda k: json.dumps([{"k": k, "events": [{"type": "page"}]}]),
    "not UTF-8": lambda k: b'{"k": "' + k.encode() + b'", "events": [{"title": "\xff"}]}',
    "oversize": lambda k: _beacon(k, [{"type": "page", "title": "x" * 70_000}]),
    "no events": lambda k: json.dumps({"k": k}),
    "events not a list": lambda k: json.dumps({"k": k, "events": {"type": "page"}}),
    "events empty": lambda k: json.dumps({"k": k, "events": []}),
    "too many events": lambda k: _beacon(k, [{"type": "page"}] * 51),
    "event not an object": lambda k: json.dumps({"k": k, "events": ["page"]}),
    "ts a string": lambda k: _beacon(k, [{"type": "page", "ts": "now"}]),
    "ts NaN": lambda k: _beacon(k, [{"type": "page", "ts": float("nan")}]),
    "ts negative": lambda k: _beacon(k, [{"type": "page", "ts": -5}]),
    "ts beyond any date": lambda k: _beacon(k, [{"type": "page", "ts": 1e300}]),
    "sentAt beyond any date": lambda k: _beacon(k, [{"type": "page", "ts": 1}], sentAt=10**19),
    "sentAt a bool": lambda k: _beacon(k, [{"type": "page"}], sentAt=True),
    "consent not a list": lambda k: json.dumps({"k": k, "consent": "analytics", "events": [{}]}),
    "consent of numbers": lambda k: _beacon(k, [{"type": "page"}], consent=[1]),
    "unknown type": lambda k: _beacon(k, [{"type": "alias"}]),
    "bad event name": lambda k: _beacon(k, [{"type": "track", "event": "<script>"}]),
    "event name not a string": lambda k: _beacon(k, [{"type": "track", "event": 7}]),
    "props not an object": lambda k: _beacon(k, [{"type": "track", "props": [1]}]),
    "traits not an object": lambda k: _beacon(k, [{"type": "identify", "traits": "a@b.de"}]),
    "id not a string": lambda k: _beacon(k, [{"type": "page", "id": 12345678}]),
    "id too short": lambda k: _beacon(k, [{"type": "page", "id": "abc"}]),
    "one bad event of two": lambda k: _beacon(k, [{"type": "page"}, {"type": "page", "ts": "x"}]),
}


@pytest.mark.parametrize("case", sorted(BAD_BEACONS))
def test_bad_beacons_are_400_problems(client, redis, write_key, case):
    """Malformed, wrong-typed or oversize beacons: 400 problem+json, nothing enqueued."""
    resp = _post(client, BAD_BEACONS[case](write_key))
    assert resp.status_code == 400 and resp.mimetype == PROBLEM
    problem = resp.get_json()
    assert problem["status"] == 400 and problem["title"] and problem["detail"]
    assert "Set-Cookie" not in resp.headers
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN  # the tag shows it
    assert redis.xlen(keyspace.partition(0).stream) == 0
    bad = read_metric(scrape(client), "dmp_hits_total", collector="tag", outcome="bad_input")
    assert bad == 1


@pytest.mark.parametrize("key", ["wk_unknown", "", 42, None])
def test_unknown_write_key_is_401_problem(client, redis, site, key):
    """A beacon whose k is no site's write key is refused 401 and nothing enqueued."""
    resp = _post(client, json.dumps({"k": key, "events": [{"type": "page"}]}))
    assert resp.status_code == 401 and resp.mimetype == PROBLEM
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert redis.xlen(keyspace.partition(0).stream) == 0
    unknown = read_metric(scrape(client), "dmp_hits_total", collector="tag", outcome="unknown_key")
    assert unknown == 1


def test_collect_allows_only_post_and_options(client, write_key):
    """GET /collect is a 405 problem, not a crash or an HTML page."""
    resp = client.get("/collect")
    assert resp.status_code == 405 and resp.mimetype == PROBLEM


def test_server_keeps_serving_after_bad_beacons(client, redis, write_key, drain):
    """After every kind of bad beacon, a good one is still accepted and stored."""
    for make in BAD_BEACONS.values():
        assert _post(client, make(write_key)).status_code == 400
    resp = _post(client, _beacon(write_key, [{"type": "page", "url": "https://acme.de/"}]))
    assert resp.status_code == 204 and redis.xlen(keyspace.partition(0).stream) == 1
    assert drain() == 1
    assert client.get("/healthz").status_code == 200


# --- identity across set-ups: the uid's echo and the tag-held uid ``u`` -------------------

NOT_RETURNED = "dmp_cookie_not_returned_total"
HELD = "tagHeldUid-0123456789"  # a uid as dmp makes them, kept by the tag on the page's site


def _not_returned(client, site) -> float | None:
    return read_metric(scrape(client), NOT_RETURNED, site=site[0].site_id)


def test_consented_answer_echoes_the_uid_for_the_tag(client, write_key):
    """With analytics consent the answer names the uid it set, readable by the page; the
    same uid again when the cookie comes back; without consent no uid is named."""
    first = _post(client, _beacon(write_key, [{"type": "page"}]))
    uid = cookie_uid(first)
    assert first.headers[cookie.ECHO_HEADER] == uid
    assert cookie.ECHO_HEADER in first.headers["Access-Control-Expose-Headers"]
    again = _post(client, _beacon(write_key, [{"type": "page"}]))
    assert again.headers[cookie.ECHO_HEADER] == uid
    client.delete_cookie("dmp_uid")
    none = _post(client, _beacon(write_key, [{"type": "page"}], consent=("ads",)))
    assert none.status_code == 204 and cookie.ECHO_HEADER not in none.headers


def test_held_uid_stands_in_for_a_cookie_not_returned(client, redis, site, write_key, drain):
    """No dmp cookie but the tag's ``u`` from the site's origin: the hits are that uid's
    (one person across beacons), and each counts in dmp_cookie_not_returned_total."""
    events = [{"type": "page"}, {"type": "track", "event": "download"}]
    for batch in (events, [{"type": "identify", "traits": {"email": "anna@acme.de"}}]):
        client.delete_cookie("dmp_uid")  # the browser drops dmp's cookie: another site
        resp = _post(client, _beacon(write_key, batch, u=HELD))
        assert resp.status_code == 204 and resp.headers[cookie.ECHO_HEADER] == HELD
    assert {h.uid for h in stream_hits(redis)} == {HELD}
    assert _not_returned(client, site) == 3
    drain()
    person = person_of(redis, IdKind.UID, HELD)
    assert person["tier"] == "medium"
    assert find_person(redis, Identifier(IdKind.EMAIL, "anna@acme.de")) == person["person_id"]


def test_returned_cookie_wins_over_the_held_uid(client, redis, site, write_key):
    """When dmp's cookie comes back it is the uid, whatever ``u`` says; nothing is counted."""
    uid = cookie_uid(_post(client, _beacon(write_key, [{"type": "page"}])))
    resp = _post(client, _beacon(write_key, [{"type": "page"}], u=HELD))
    assert resp.headers[cookie.ECHO_HEADER] == uid
    assert [h.uid for h in stream_hits(redis)] == [uid, uid]
    assert _not_returned(client, site) is None


def test_held_uid_is_ignored_without_an_origin(client, redis, site, write_key):
    """A ``u`` from no page (no Origin: curl, a server) names nobody: a new uid is made."""
    resp = _post(client, _beacon(write_key, [{"type": "page"}], u=HELD), origin=None)
    assert resp.status_code == 204 and cookie_uid(resp) != HELD
    assert stream_hits(redis)[0].uid == cookie_uid(resp)
    assert _not_returned(client, site) is None


def test_held_uid_from_a_foreign_origin_is_refused(client, redis, write_key):
    """A ``u`` from an origin outside the site's domains is refused with the beacon."""
    resp = _post(client, _beacon(write_key, [{"type": "page"}], u=HELD), origin="https://x.example")
    assert resp.status_code == 403 and redis.xlen(keyspace.partition(0).stream) == 0


def test_held_uid_without_analytics_consent_is_forgotten(client, redis, site, write_key, drain):
    """Without analytics consent a ``u`` identifies nothing: the tag sends it as consent
    is withdrawn, and dmp forgets that uid's link to the person."""
    _post(client, _beacon(write_key, [{"type": "page"}], u=HELD))
    client.delete_cookie("dmp_uid")
    drain()
    assert find_person(redis, Identifier(IdKind.UID, HELD)) is not None
    withdrawn = {"type": "track", "event": "consent", "props": {"granted": []}}
    resp = _post(client, _beacon(write_key, [withdrawn], consent=(), u=HELD))
    assert resp.status_code == 204 and cookie.ECHO_HEADER not in resp.headers
    consent_hit, forget = stream_hits(redis)[-2:]
    assert consent_hit.uid == "" and (forget.event, forget.uid) == ("consent_withdrawn", HELD)
    drain()
    assert find_person(redis, Identifier(IdKind.UID, HELD)) is None
    assert _not_returned(client, site) == 1  # the first beacon only


@pytest.mark.parametrize(
    "u",
    [12345678901234567, ["tagHeldUid-0123456789"], "short", "x" * 65, "bad uid with spaces!"],
    ids=["a number", "a list", "too short", "too long", "bad characters"],
)
def test_malformed_held_uid_refuses_the_beacon(client, redis, write_key, u):
    """A ``u`` that is no uid as dmp makes them is a 400 problem; nothing is stored."""
    resp = _post(client, _beacon(write_key, [{"type": "page"}], u=u))
    assert resp.status_code == 400 and resp.mimetype == PROBLEM
    assert resp.get_json()["detail"].startswith("u:")
    assert redis.xlen(keyspace.partition(0).stream) == 0


# --- the TC string in beacons -------------------------------------------------------------

VECTORS = Path(__file__).parent / "tcf" / "vectors.json"


def _tc(name: str) -> str:
    """Return the TC string @iabtcf/core encoded for the test vector ``name``."""
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))["vectors"]
    return next(v["string"] for v in vectors if v["name"] == name)


def test_tc_string_decides_consent_and_proof(client, redis, write_key, drain):
    """A beacon's TC string decides, whatever its consent list says: purposes 1 and 9
    grant analytics only, and the proof names the CMP (300) and the string's hash."""
    body = _beacon(
        write_key,
        [{"type": "page"}],
        consent=(),
        gdpr_consent=_tc("analytics only through purpose 9"),
    )
    resp = _post(client, body)
    uid = cookie_uid(resp)
    hit = stream_hits(redis)[0]
    assert hit.consent == {"analytics": True, "ads": False, "email": False}
    assert hit.uid == uid and hit.consent_version.startswith("tcf:300:")
    drain()
    person = person_of(redis, IdKind.UID, uid)
    record = consent_of(person, "analytics")
    assert record["granted"] is True and record["version"] == hit.consent_version


@pytest.mark.parametrize("name", ["no consent at all", "legitimate interest only", "garbage"])
def test_tc_string_without_consent_outweighs_the_list(client, redis, write_key, name):
    """A TC string granting nothing (or undecodable) grants nothing, though the list says
    analytics and ads: no cookie, no uid."""
    tc = "CQgarbage.not-a-tc-string" if name == "garbage" else _tc(name)
    resp = _post(
        client, _beacon(write_key, [{"type": "page"}], ("analytics", "ads"), gdpr_consent=tc)
    )
    assert resp.status_code == 204 and "Set-Cookie" not in resp.headers
    hit = stream_hits(redis)[0]
    assert hit.uid == "" and not any(hit.consent.values())


def test_tc_string_granting_all_makes_ads_consent(client, redis, write_key):
    """Accept-all in the CMP: analytics and ads, whatever the list."""
    _post(
        client, _beacon(write_key, [{"type": "page"}], consent=(), gdpr_consent=_tc("accept all"))
    )
    assert stream_hits(redis)[0].consent == {"analytics": True, "ads": True, "email": False}


@pytest.mark.parametrize("tc", [42, ["CQ"], "C" * 9000], ids=["a number", "a list", "oversize"])
def test_wrong_tc_string_refuses_the_beacon(client, redis, write_key, tc):
    """A gdpr_consent that is no string, or longer than any TC string, is a 400 problem."""
    resp = _post(client, _beacon(write_key, [{"type": "page"}], gdpr_consent=tc))
    assert resp.status_code == 400 and resp.get_json()["detail"].startswith("gdpr_consent:")
    assert redis.xlen(keyspace.partition(0).stream) == 0
