"""The tracking pixel: always the GIF; consent decides cookie, identity and storage."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from collectors.pixel import GIF, OPERATION
from collectors.tcstring import proof_of
from dmp.app import create_app
from dmp.ingest import spool
from dmp.ingest.eventlog import scan_events
from dmp.ingest.worker import status
from dmp.people.identity import Identifier, IdKind
from dmp.people.profiles import find_person, get_person
from dmp.storage import keyspace
from tests.factories import (
    CHROME,
    GOOGLEBOT,
    bearer,
    consent_of,
    cookie_uid,
    person_of,
    read_metric,
    scrape,
    stream_hits,
)

THIRTEEN_MONTHS = 395 * 86400
# TC strings @iabtcf/core encoded (tests/collectors/tcf/make_vectors.mjs), by what they hold
_VECTORS = json.loads((Path(__file__).parent / "tcf" / "vectors.json").read_text())["vectors"]
TC = {v["name"]: v["string"] for v in _VECTORS}
TC_ALL = TC["ads and analytics, few vendors (bitfield)"]  # purposes 1,3,4,7: ads and analytics
TC_ANALYTICS = TC["analytics only through purpose 9"]  # purposes 1,9
TC_NONE = TC["no consent at all"]
TC_CMP = 300  # the CMP id the vectors were encoded with


def _pixel(client, write_key, headers=None, **params):
    query = {"k": write_key, "url": "https://acme.de/crm?utm_source=x#top", **params}
    return client.get(
        "/p.gif", query_string=query, headers={"User-Agent": CHROME, **(headers or {})}
    )


def _entries(redis) -> list[dict]:
    """The stream's hits as dicts of their non-empty fields (what the page left there)."""
    return [{k: v for k, v in hit._asdict().items() if v} for hit in stream_hits(redis)]


def _metric(client, outcome: str) -> float:
    """Return the pixel's dmp_hits_total for an outcome (0 while never counted)."""
    return read_metric(scrape(client), "dmp_hits_total", collector="pixel", outcome=outcome) or 0


def _cookie_attrs(resp) -> dict[str, str]:
    parts = [p.strip() for p in resp.headers["Set-Cookie"].split(";")[1:]]
    return {k.lower(): v for k, _, v in (p.partition("=") for p in parts)}


def _assert_gif(resp) -> None:
    assert resp.status_code == 200 and resp.mimetype == "image/gif" and resp.data == GIF
    assert resp.headers["Content-Length"] == str(len(GIF))
    assert "no-store" in resp.headers["Cache-Control"]


def test_gif_is_a_1x1_transparent_gif():
    """The answer is a real GIF89a of one pixel."""
    assert GIF[:6] == b"GIF89a" and GIF[6:10] == b"\x01\x00\x01\x00" and GIF.endswith(b";")


def test_consented_hit_sets_cookie_and_makes_a_low_person(client, redis, config, write_key, drain):
    """With analytics consent the pixel sets dmp_uid and the visitor becomes a low person."""
    resp = _pixel(client, write_key, consent="analytics,ads", topics="CRM, ERP ,crm", title="CRM")
    _assert_gif(resp)
    assert resp.headers["Set-Cookie"].startswith("dmp_uid=")
    attrs = _cookie_attrs(resp)
    assert "httponly" in attrs and attrs["samesite"] == "Lax" and attrs["path"] == "/"
    assert "secure" not in attrs  # plain http
    assert int(attrs["max-age"]) == THIRTEEN_MONTHS
    expires = parsedate_to_datetime(attrs["expires"]).timestamp()
    assert abs(expires - (time.time() + THIRTEEN_MONTHS)) < 60
    uid = cookie_uid(resp)
    assert 16 <= len(uid) <= 64
    (entry,) = _entries(redis)
    assert entry["uid"] == uid and entry["topics"] == ["crm", "erp"] and entry["ip"] == "127.0.0.0"
    assert entry["consent"] == {"analytics": True, "ads": True, "email": False}
    assert entry["url"] == "https://acme.de/crm?utm_source=x#top"
    drain()
    person = person_of(redis, IdKind.UID, uid)
    assert person["tier"] == "low" and person["identifiers"] == {"uid": [uid]}
    assert consent_of(person, "ads")["granted"] is True
    assert consent_of(person, "email")["granted"] is False
    page = next(t for t in person["touchpoints"] if t["type"] == "page")
    assert page["title"] == "CRM" and page["topics"] == ["crm", "erp"]
    assert status(redis)["persons"]["low"] == 1 and status(redis)["events_stored"] == 1
    (row,) = scan_events(config.events_dir).collect().to_dicts()
    assert row["person_id"] == person["person_id"] and row["uid"] == uid
    assert row["source"] == "pixel" and row["browser"] == "Chrome" and row["device"] == "desktop"
    assert _metric(client, "ok") == 1


def test_admin_api_finds_the_cookie_person(client, write_key, admin_key, drain):
    """The admin API looks a pixel visitor up by ?uid= and shows them low."""
    uid = cookie_uid(_pixel(client, write_key, consent="analytics"))
    drain()
    resp = client.get(f"/api/v1/persons?uid={uid}", headers=bearer(admin_key))
    assert resp.status_code == 200
    assert resp.get_json()["tier"] == "low" and resp.get_json()["identifiers"]["uid"] == [uid]


def test_cookie_is_secure_on_https(client, write_key):
    """On https the cookie is Secure, with the same other attributes."""
    resp = client.get(
        "/p.gif",
        query_string={"k": write_key, "consent": "analytics"},
        base_url="https://t.acme.de",
    )
    _assert_gif(resp)
    attrs = _cookie_attrs(resp)
    assert "secure" in attrs and "httponly" in attrs and attrs["samesite"] == "Lax"


def test_cookie_is_reused(client, redis, write_key, drain):
    """A returning browser keeps its id: the cookie is renewed, one person, two page views."""
    first = _pixel(client, write_key, consent="analytics")
    second = _pixel(client, write_key, consent="analytics", url="https://acme.de/preise")
    # The client sent the cookie back; it was renewed.
    assert cookie_uid(first) == cookie_uid(second)
    uids = {e["uid"] for e in _entries(redis)}
    assert uids == {cookie_uid(first)}
    drain()
    person = person_of(redis, IdKind.UID, cookie_uid(first))
    pages = [t for t in person["touchpoints"] if t["type"] == "page"]
    assert sorted(t["url"] for t in pages) == [
        "https://acme.de/crm?utm_source=x#top",
        "https://acme.de/preise",
    ]
    assert status(redis)["persons"]["low"] == 1


def test_a_bad_cookie_value_is_replaced(client, redis, write_key):
    """A malformed dmp_uid cookie is not trusted: the browser gets a fresh id."""
    client.set_cookie("dmp_uid", "short")
    resp = _pixel(client, write_key, consent="analytics")
    assert cookie_uid(resp) != "short" and len(cookie_uid(resp)) >= 16
    assert _entries(redis)[0]["uid"] == cookie_uid(resp)


def test_without_analytics_consent_only_aggregates(client, redis, config, write_key, drain):
    """No analytics consent: no cookie, no id, no IP; only the aggregate counts grow."""
    resp = _pixel(client, write_key, consent="ads", topics="CRM,Künstliche Intelligenz")
    _assert_gif(resp)
    assert "Set-Cookie" not in resp.headers
    (entry,) = _entries(redis)
    assert "uid" not in entry and "ip" not in entry and "127.0.0" not in json.dumps(entry)
    drain()
    assert status(redis)["events_aggregate"] == 1 and status(redis)["events_stored"] == 0
    assert status(redis)["persons"] == {"low": 0, "medium": 0, "high": 0}
    day = datetime.now(UTC).strftime("%Y%m%d")
    counts = redis.hgetall(keyspace.partition(0).aggregate("acme-gmbh", day))
    assert counts["url:https://acme.de/crm"] == "1"  # query and fragment stripped
    assert counts["topic:crm"] == "1" and counts["topic:künstliche intelligenz"] == "1"
    assert counts["hits"] == "1" and counts["event:page"] == "1"
    assert not any("utm_source" in f for f in counts)
    assert scan_events(config.events_dir).collect().height == 0
    assert not redis.keys("dmp:id:*") and not redis.keys("dmp:person:*")


def test_aggregate_counts_add_up(client, redis, write_key, drain):
    """Several unconsented hits on one url add up in the day's aggregate hash."""
    for query in ("a=1", "b=2", ""):
        _pixel(client, write_key, url=f"https://acme.de/preise?{query}", topics="pricing")
    drain()
    counts = redis.hgetall(
        keyspace.partition(0).aggregate("acme-gmbh", datetime.now(UTC).strftime("%Y%m%d"))
    )
    assert counts["url:https://acme.de/preise"] == "3" and counts["topic:pricing"] == "3"
    assert status(redis)["events_aggregate"] == 3


@pytest.mark.parametrize(
    ("header", "page_consent", "expected"),
    [
        ({"Sec-GPC": "1"}, "analytics,ads,email", {"analytics": True, "ads": False, "email": True}),
        ({"DNT": "1"}, "analytics,ads,email", {"analytics": True, "ads": False, "email": True}),
        ({"Sec-GPC": "1", "DNT": "1"}, "analytics,ads", {"analytics": True, "ads": False}),
        ({"DNT": "0"}, "analytics,ads", {"analytics": True, "ads": True}),
        ({"Sec-GPC": "0"}, "analytics,ads", {"analytics": True, "ads": True}),
    ],
)
def test_browser_privacy_signals_withhold_ads(
    client, redis, write_key, drain, header, page_consent, expected
):
    """Sec-GPC: 1 or DNT: 1 withholds ads whatever the page says; other values do not."""
    resp = _pixel(client, write_key, headers=header, consent=page_consent)
    (entry,) = _entries(redis)
    assert entry["consent"] == {"email": False, **expected}
    drain()
    person = person_of(redis, IdKind.UID, cookie_uid(resp))
    assert consent_of(person, "ads")["granted"] is expected["ads"]


@pytest.mark.parametrize(
    ("addr", "stored"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("2001:db8:1234:5678:9abc:def0:1234:5678", "2001:db8:1234::"),
        ("::ffff:198.51.100.9", "198.51.100.0"),
    ],
)
def test_ip_is_truncated_before_storage(client, redis, config, write_key, drain, addr, stored):
    """IPv4 loses its last octet and IPv6 its last 80 bits before anything is stored."""
    client.get(
        "/p.gif",
        query_string={"k": write_key, "consent": "analytics"},
        environ_base={"REMOTE_ADDR": addr},
    )
    assert _entries(redis)[0]["ip"] == stored
    assert addr not in json.dumps(_entries(redis))
    drain()
    assert scan_events(config.events_dir).collect()["ip"].to_list() == [stored]
    for key in redis.keys("*"):
        if redis.type(key) == "hash":
            assert addr not in json.dumps(redis.hgetall(key))


def test_forwarded_for_is_used_behind_a_trusted_proxy(config, redis, write_key, make_app):
    """With DMP_PROXY_HOPS=1 the client address comes from X-Forwarded-For (then truncated)."""
    behind = make_app(
        config.__class__(
            **{name: getattr(config, name) for name in config.__slots__} | {"proxy_hops": 1}
        )
    )
    client = behind.test_client()
    resp = client.get(
        "/p.gif",
        query_string={"k": write_key, "consent": "analytics"},
        headers={"X-Forwarded-For": "198.51.100.23", "X-Forwarded-Proto": "https"},
    )
    behind.extensions["dmp"].appender.sync()
    assert _entries(redis)[0]["ip"] == "198.51.100.0"
    assert "Secure" in resp.headers["Set-Cookie"]  # the proxy spoke https to the browser


def test_withdrawn_consent_drops_the_cookie(client, redis, config, write_key, drain):
    """A known cookie arriving without analytics consent is expired and unlinked."""
    first = _pixel(client, write_key, consent="analytics")
    uid = cookie_uid(first)
    drain()
    pid = find_person(redis, Identifier(IdKind.UID, uid))
    assert pid and status(redis)["persons"]["low"] == 1
    resp = _pixel(client, write_key, consent="")
    _assert_gif(resp)
    dropped = resp.headers["Set-Cookie"]
    assert dropped.startswith("dmp_uid=;") and "Max-Age=0" in dropped and "1970" in dropped
    hit, withdrawal = _entries(redis)[-2:]
    assert "uid" not in hit and "ip" not in hit
    assert withdrawal["type"] == "consent" and withdrawal["uid"] == uid
    drain()
    assert find_person(redis, Identifier(IdKind.UID, uid)) is None
    person = get_person(redis, pid)
    assert person["identifiers"] == {} and consent_of(person, "analytics")["granted"] is False
    assert status(redis)["persons"]["low"] == 0
    assert scan_events(config.events_dir).collect().height == 1  # only the consented view
    third = _pixel(client, write_key, consent="")
    assert "Set-Cookie" not in third.headers  # the browser no longer sends the cookie


def test_consent_given_again_makes_a_new_person(client, redis, write_key, drain):
    """After a withdrawal, new consent starts a new id: the old history is not re-linked."""
    old = cookie_uid(_pixel(client, write_key, consent="analytics"))
    _pixel(client, write_key, consent="")
    drain()
    new = cookie_uid(_pixel(client, write_key, consent="analytics"))
    drain()
    assert new != old and person_of(redis, IdKind.UID, new)["tier"] == "low"
    assert find_person(redis, Identifier(IdKind.UID, old)) is None


@pytest.mark.parametrize("consent", ["analytics", ""])
def test_bots_never_become_persons(client, redis, config, write_key, drain, consent):
    """A crawler's hit never makes a person: stored flagged as a bot when consented."""
    _pixel(client, write_key, headers={"User-Agent": GOOGLEBOT}, consent=consent)
    drain()
    assert status(redis)["persons"] == {"low": 0, "medium": 0, "high": 0}
    assert not redis.keys("dmp:person:*")
    log = scan_events(config.events_dir).collect()
    if consent:
        assert log["is_bot"].to_list() == [True] and log["person_id"].to_list() == [None]
        assert log["device"].to_list() == ["bot"]
    else:
        assert log.height == 0
        day = datetime.now(UTC).strftime("%Y%m%d")
        counts = redis.hgetall(keyspace.partition(0).aggregate("acme-gmbh", day))
        assert counts.get("bots") == "1" and "hits" not in counts


def test_page_id_deduplicates_a_repeated_hit(client, config, write_key, drain):
    """A page-given id (8-64 characters) makes a repeated hit count once."""
    for _ in range(2):
        _pixel(client, write_key, consent="analytics", id="view-0000001")
    _pixel(client, write_key, consent="analytics", id="short")  # too short: a fresh id
    drain()
    ids = scan_events(config.events_dir).collect()["event_id"].to_list()
    assert len(ids) == 2 and "view-0000001" in ids and "short" not in ids


@pytest.mark.parametrize(
    ("event", "stored_type"), [("page", "page"), ("Whitepaper Download", "track"), ("", "page")]
)
def test_event_names(client, redis, write_key, event, stored_type):
    """e= names the event (default page); anything but page is a track."""
    _pixel(client, write_key, consent="analytics", e=event)
    (entry,) = _entries(redis)
    assert entry["type"] == stored_type and entry["event"] == (event or "page")


@pytest.mark.parametrize(
    ("query", "outcome"),
    [
        ({"k": "wk_unknown", "consent": "analytics"}, "unknown_key"),
        ({"k": "", "consent": "analytics"}, "unknown_key"),
        ({"k": None, "consent": "analytics"}, "unknown_key"),  # missing
        ({"k": "x" * 500}, "unknown_key"),
        ({"e": "<script>alert(1)</script>"}, "bad_input"),
        ({"e": "x" * 100}, "bad_input"),
        ({"e": " leading-space"}, "bad_input"),
        ({"url": "https://acme.de/" + "x" * 9000, "consent": "analytics"}, "bad_input"),
        ({f"p{i}": "1" for i in range(70)}, "bad_input"),  # too many parameters
    ],
)
def test_bad_input_still_answers_the_gif(client, redis, write_key, query, outcome):
    """Unknown keys, bad event names and huge queries get the GIF, are counted, store nothing."""
    query = {k: v for k, v in {"k": write_key, **query}.items() if v is not None}
    resp = client.get("/p.gif", query_string=query, headers={"User-Agent": CHROME})
    _assert_gif(resp)
    assert "Set-Cookie" not in resp.headers
    assert redis.xlen(keyspace.partition(0).stream) == 0
    assert _metric(client, outcome) == 1
    assert _metric(client, "ok") == 0


def test_a_query_just_under_the_limit_is_stored(client, redis, write_key):
    """A long but allowed query string is still a hit (the URL cut to 2 KB)."""
    long_url = "https://acme.de/" + "x" * 7000
    _pixel(client, write_key, consent="analytics", url=long_url)
    (entry,) = _entries(redis)
    assert entry["url"] == long_url[:2048]


@pytest.mark.parametrize(
    "raw",
    [
        "k=%ff%fe&e=%00",
        "&&&==&k",
        "k[]=1&k[]=2",
        "k",
        "=&=&=",
        "k=%",
        "k=%zz%",
        "k=\xff\xfe\x00",  # raw non-UTF-8 bytes as WSGI hands them over (latin-1)
    ],
)
def test_garbage_queries_get_the_gif(client, redis, raw):
    """Undecodable bytes and odd shapes never break the pixel; they count as unknown keys."""
    resp = client.get("/p.gif", environ_overrides={"QUERY_STRING": raw})
    _assert_gif(resp)
    assert redis.xlen(keyspace.partition(0).stream) == 0
    assert _metric(client, "unknown_key") == 1
    assert client.get("/healthz").status_code == 200


def test_garbage_values_with_a_good_key_are_cleaned(client, redis, write_key):
    """Bad values of optional parameters are dropped, not stored and not fatal."""
    raw = (
        f"k={write_key}&consent=analytics,%ff,bogus&topics=%ff,,,<b>,CRM&url=javascript:alert(1)"
        "&ref=data:text/html,x&title=%ff%fe"
    )
    resp = client.get("/p.gif", environ_overrides={"QUERY_STRING": raw})
    _assert_gif(resp)
    (entry,) = _entries(redis)
    assert "url" not in entry and "referrer" not in entry  # only http(s) URLs are kept
    assert entry["topics"] == ["b", "crm"]
    assert entry["title"] == "\ufffd\ufffd"
    assert entry["consent"] == {"analytics": True, "ads": False, "email": False}
    assert _metric(client, "ok") == 1


def test_unescaped_utf8_in_the_query_is_decoded(client, redis, write_key):
    """UTF-8 sent unescaped (latin-1 in the WSGI environ) is read as UTF-8."""
    title = "Über uns – Preise"
    raw = f"k={write_key}&consent=analytics&title=" + title.encode().decode("latin-1")
    client.get("/p.gif", environ_overrides={"QUERY_STRING": raw})
    assert _entries(redis)[0]["title"] == title


def test_head_answers_headers_and_other_methods_405(client, redis, write_key):
    """HEAD gets the GIF's headers without a body and records nothing; POST is a 405 problem."""
    head = client.head("/p.gif", query_string={"k": write_key, "consent": "analytics"})
    assert head.status_code == 200 and head.mimetype == "image/gif" and head.data == b""
    assert "no-store" in head.headers["Cache-Control"] and "Set-Cookie" not in head.headers
    assert redis.xlen(keyspace.partition(0).stream) == 0
    post = client.post("/p.gif")
    assert post.status_code == 405 and post.mimetype == "application/problem+json"


def test_metrics_count_each_outcome(client, write_key):
    """/metrics shows ok, unknown_key and bad_input pixel hits in Prometheus form."""
    for _ in range(3):
        _pixel(client, write_key, consent="analytics")
    _pixel(client, "wk_nobody")
    _pixel(client, write_key, e="!bad")
    text = client.get("/metrics").get_data(as_text=True)
    assert "# TYPE dmp_hits_total counter" in text
    assert (_metric(client, "ok"), _metric(client, "unknown_key")) == (3, 1)
    assert _metric(client, "bad_input") == 1


def test_cookie_domain_setting(config, redis, write_key, make_app):
    """With DMP_COOKIE_DOMAIN the cookie is set, and dropped, for that domain."""
    app = make_app(
        config.__class__(
            **{name: getattr(config, name) for name in config.__slots__}
            | {"cookie_domain": "acme.de"}
        )
    )
    client = app.test_client()
    query = {"k": write_key, "consent": "analytics"}
    resp = client.get("/p.gif", query_string=query, base_url="https://t.acme.de")
    assert "Domain=acme.de" in resp.headers["Set-Cookie"]
    uid = cookie_uid(resp)
    dropped = client.get(
        "/p.gif",
        query_string={"k": write_key},
        headers={"Cookie": f"dmp_uid={uid}"},
        base_url="https://t.acme.de",
    ).headers["Set-Cookie"]
    assert dropped.startswith("dmp_uid=;") and "Domain=acme.de" in dropped and "Secure" in dropped


def test_pixel_answers_the_gif_when_redis_is_down(config, write_key):
    """Redis unreachable: the page still gets its GIF and the hit waits in the spool."""
    down = create_app(
        config.__class__(
            **{name: getattr(config, name) for name in config.__slots__}
            | {"redis_url": "redis://127.0.0.1:1/0"}
        )
    )
    resp = down.test_client().get("/p.gif", query_string={"k": write_key, "consent": "analytics"})
    _assert_gif(resp)
    assert spool.spooled_bytes(config.data_dir) > 0


def _tcf_pixel(client, write_key, headers=None, **params):
    """Return the answer to a pixel hit of a raw query (ad servers' macros stay unescaped)."""
    query = "&".join([f"k={write_key}", *(f"{k}={v}" for k, v in params.items())])
    headers = {"User-Agent": CHROME, **(headers or {})}
    return client.get("/p.gif", environ_overrides={"QUERY_STRING": query}, headers=headers)


@pytest.mark.parametrize(
    ("gdpr", "page_consent"), [("1", ""), ("1", "email"), ("", "email"), ("%20%31", "")]
)
def test_a_tc_string_grants_by_its_purposes_and_is_proven_by_cmp_and_hash(
    client, redis, write_key, drain, gdpr, page_consent
):
    """gdpr=1 (or absent) with a TC string: the consent comes from the string's purposes,
    consent= is ignored, and the proof stored with the hit and the person is tcf:<CMP>:<hash>."""
    params = {"gdpr": gdpr} if gdpr else {}
    resp = _tcf_pixel(client, write_key, gdpr_consent=TC_ALL, consent=page_consent, **params)
    _assert_gif(resp)
    uid = cookie_uid(resp)
    (entry,) = _entries(redis)
    assert entry["consent"] == {"analytics": True, "ads": True, "email": False}
    proof = entry["consent_version"]
    assert proof == proof_of(TC_ALL) and proof.startswith(f"tcf:{TC_CMP}:") and TC_ALL not in proof
    drain()
    person = person_of(redis, IdKind.UID, uid)
    for category, granted in (("analytics", True), ("ads", True), ("email", False)):
        record = consent_of(person, category, f"uid:{uid}")
        assert record["granted"] is granted and record["version"] == proof


def test_a_tc_string_granting_analytics_only(client, redis, write_key):
    """Purposes 1 and 9 grant analytics (the cookie) and not ads, whatever consent= says."""
    resp = _tcf_pixel(client, write_key, gdpr="1", gdpr_consent=TC_ANALYTICS, consent="ads")
    assert cookie_uid(resp)
    assert _entries(redis)[0]["consent"] == {"analytics": True, "ads": False, "email": False}


@pytest.mark.parametrize(
    ("params", "proof"),
    [
        ({"gdpr": "1", "gdpr_consent": "CQhD!nIAQ", "consent": "analytics"}, "tcf:invalid:"),
        ({"gdpr": "1", "gdpr_consent": TC_ALL[:20], "consent": "analytics"}, "tcf:invalid:"),
        (
            {"gdpr_consent": "BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA", "consent": "analytics"},
            "tcf:inv",
        ),
        ({"gdpr": "1", "consent": "analytics,ads"}, "tcf:none"),
        ({"gdpr": "1", "gdpr_consent": "", "consent": "analytics"}, "tcf:none"),
        ({"gdpr": "1", "gdpr_consent": "${GDPR_CONSENT_755}", "consent": "analytics"}, "tcf:none"),
        ({"gdpr_consent": TC_NONE, "consent": "analytics"}, f"tcf:{TC_CMP}:"),
        ({"gdpr": "banana", "gdpr_consent": TC_NONE, "consent": "analytics"}, f"tcf:{TC_CMP}:"),
    ],
)
def test_no_consent_from_a_bad_missing_or_refusing_tc_string(
    client, redis, write_key, drain, params, proof
):
    """Where GDPR applies, an undecodable string, no string, or a string without the purposes
    grants nothing: the GIF, no cookie, no identity, the hit counted and kept in aggregate."""
    resp = _tcf_pixel(client, write_key, **params)
    _assert_gif(resp)
    assert "Set-Cookie" not in resp.headers
    (entry,) = _entries(redis)
    assert entry.get("consent", {}) in ({}, {"analytics": False, "ads": False, "email": False})
    assert "uid" not in entry and "ip" not in entry
    assert entry["consent_version"].startswith(proof)
    assert _metric(client, "ok") == 1
    drain()
    assert status(redis)["events_aggregate"] == 1 and not redis.keys("dmp:person:*")


def test_gdpr_0_ignores_the_tc_string(client, redis, write_key):
    """gdpr=0 (GDPR does not apply, says the caller): consent= and cv= decide as before."""
    resp = _tcf_pixel(
        client, write_key, gdpr="0", gdpr_consent=TC_NONE, consent="analytics", cv="v3"
    )
    assert cookie_uid(resp)
    (entry,) = _entries(redis)
    assert entry["consent"] == {"analytics": True, "ads": False, "email": False}
    assert entry["consent_version"] == "v3"


@pytest.mark.parametrize(
    "macros",
    [
        "gdpr=${GDPR}&gdpr_consent=${GDPR_CONSENT_755}",
        "gdpr=%24%7BGDPR%7D&gdpr_consent=%24%7BGDPR_CONSENT_755%7D",  # escaped by the page
        "gdpr=%7BGDPR%7D&gdpr_consent=%7BGDPR_CONSENT_755%7D",
        "gdpr=%257BGDPR%257D&gdpr_consent=%257BGDPR_CONSENT%257D",  # escaped twice
        "gdpr=%%GDPR%%&gdpr_consent=%%GDPR_CONSENT_755%%",
        "gdpr=[GDPR]&gdpr_consent=[GDPR_CONSENT_755]",
        "gdpr_consent=${GDPR_CONSENT_755}",
        "gdpr=&gdpr_consent=",
    ],
)
def test_unexpanded_ad_server_macros_count_as_absent(client, redis, write_key, macros):
    """An ad server that did not fill its macros leaves them as text: treated as absent,
    so consent= applies (never a TC string 'undecodable' that would refuse everything)."""
    query = f"k={write_key}&consent=analytics&{macros}"
    resp = client.get("/p.gif", environ_overrides={"QUERY_STRING": query})
    _assert_gif(resp)
    assert cookie_uid(resp)
    (entry,) = _entries(redis)
    assert entry["consent"]["analytics"] is True and "consent_version" not in entry


def test_browser_signals_still_withhold_ads_from_a_tc_string(client, redis, write_key):
    """Sec-GPC: 1 withholds ads even when the TC string grants them."""
    _tcf_pixel(client, write_key, headers={"Sec-GPC": "1"}, gdpr="1", gdpr_consent=TC_ALL)
    assert _entries(redis)[0]["consent"] == {"analytics": True, "ads": False, "email": False}


def test_a_tc_string_withdrawing_consent_drops_the_cookie(client, redis, write_key, drain):
    """The CMP's later refusal (a new TC string) drops the cookie and unlinks the person."""
    uid = cookie_uid(_tcf_pixel(client, write_key, gdpr="1", gdpr_consent=TC_ALL))
    drain()
    resp = _tcf_pixel(client, write_key, gdpr="1", gdpr_consent=TC_NONE)
    assert resp.headers["Set-Cookie"].startswith("dmp_uid=;")
    withdrawal = _entries(redis)[-1]
    assert withdrawal["type"] == "consent" and withdrawal["uid"] == uid
    assert withdrawal["consent_version"] == proof_of(TC_NONE)
    drain()
    assert find_person(redis, Identifier(IdKind.UID, uid)) is None


def test_the_purpose_rules_come_from_the_settings(config, redis, write_key, make_app):
    """DMP_TCF_ANALYTICS and DMP_TCF_VENDOR_ID decide what a TC string grants the pixel."""

    def client_with(**settings):
        fields = {name: getattr(config, name) for name in config.__slots__}
        return make_app(config.__class__(**fields | settings)).test_client()

    # purposes 1,9 and vendors 2,4: analytics by default, not under a rule needing 7
    strict = client_with(tcf_analytics="1,7")
    assert (
        "Set-Cookie"
        not in _tcf_pixel(strict, write_key, gdpr="1", gdpr_consent=TC_ANALYTICS).headers
    )
    own_vendor = client_with(tcf_vendor_id=4)
    assert cookie_uid(_tcf_pixel(own_vendor, write_key, gdpr="1", gdpr_consent=TC_ANALYTICS))
    other_vendor = client_with(tcf_vendor_id=3)
    resp = _tcf_pixel(other_vendor, write_key, gdpr="1", gdpr_consent=TC_ANALYTICS)
    assert "Set-Cookie" not in resp.headers


def test_the_tcf_parameters_are_documented_in_openapi(client):
    """The OpenAPI operation of the pixel lists gdpr and gdpr_consent."""
    names = {param.name for param in OPERATION.params}
    assert {"gdpr", "gdpr_consent", "consent", "cv"} <= names
    spec = client.get("/api/v1/openapi.json").get_json()
    documented = {p["name"] for p in spec["paths"]["/p.gif"]["get"]["parameters"]}
    assert {"gdpr", "gdpr_consent"} <= documented
