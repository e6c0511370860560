"""The tracking pixel: always the GIF; consent decides cookie, identity and storage."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from collectors.pixel import GIF
from dmp import keyspace
from dmp.eventlog import scan_events
from dmp.identity import Identifier, IdKind
from dmp.profiles import find_person, get_person
from dmp.worker import status

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)


def _pixel(client, write_key, headers=None, **params):
    query = {"k": write_key, "url": "https://acme.de/crm?utm_source=x", **params}
    return client.get(
        "/p.gif", query_string=query, headers={"User-Agent": CHROME, **(headers or {})}
    )


def _entries(redis) -> list[dict]:
    return [json.loads(f["h"]) for _, f in redis.xrange(keyspace.STREAM)]


def _metric(client, outcome: str) -> int:
    text = client.get("/metrics").get_data(as_text=True)
    sample = f'dmp_hits_total{{collector="pixel",outcome="{outcome}"}} '
    return int(next((ln.split()[-1] for ln in text.splitlines() if ln.startswith(sample)), 0))


def _assert_gif(resp) -> None:
    assert resp.status_code == 200 and resp.mimetype == "image/gif" and resp.data == GIF
    assert "no-store" in resp.headers["Cache-Control"]


def test_consented_hit_sets_cookie_and_makes_a_low_person(client, redis, write_key, drain):
    """With analytics consent the pixel sets dmp_uid and the visitor becomes a low person."""
    resp = _pixel(client, write_key, consent="analytics,ads", topics="CRM, ERP ,crm", title="CRM")
    _assert_gif(resp)
    cookie = resp.headers["Set-Cookie"]
    assert cookie.startswith("dmp_uid=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    max_age = int(cookie.split("Max-Age=")[1].split(";")[0])
    assert "; Secure" not in cookie and 390 <= max_age / 86400 <= 400  # 13 months
    uid = cookie.split(";")[0].split("=", 1)[1]
    (entry,) = _entries(redis)
    assert entry["uid"] == uid and entry["topics"] == ["crm", "erp"] and entry["ip"] == "127.0.0.0"
    drain()
    person = get_person(redis, find_person(redis, Identifier(IdKind.UID, uid)))
    assert person["tier"] == "low" and person["touchpoints"][-1]["title"] == "CRM"
    assert person["consents"]["ads"]["granted"] is True
    assert _metric(client, "ok") == 1


def test_cookie_is_secure_on_https(client, write_key):
    """On https the cookie is Secure."""
    resp = client.get(
        "/p.gif",
        query_string={"k": write_key, "consent": "analytics"},
        base_url="https://t.acme.de",
    )
    assert "; Secure" in resp.headers["Set-Cookie"]


def test_cookie_is_reused(client, redis, write_key, drain):
    """A returning browser keeps its id: one person, two page views."""
    _pixel(client, write_key, consent="analytics")
    _pixel(client, write_key, consent="analytics", url="https://acme.de/preise")
    uids = {e["uid"] for e in _entries(redis)}
    assert len(uids) == 1
    drain()
    person = get_person(redis, find_person(redis, Identifier(IdKind.UID, uids.pop())))
    assert [t["event"] for t in person["touchpoints"]].count("page") == 2


def test_without_analytics_consent_only_aggregates(client, redis, config, write_key, drain):
    """No analytics consent: no cookie, no id, no IP; only the aggregate counts grow."""
    resp = _pixel(client, write_key, consent="ads", topics="crm")
    _assert_gif(resp)
    assert "Set-Cookie" not in resp.headers
    (entry,) = _entries(redis)
    assert "uid" not in entry and "ip" not in entry
    drain()
    assert status(redis)["events_aggregate"] == 1 and status(redis)["events_stored"] == 0
    day = datetime.now(UTC).strftime("%Y%m%d")
    counts = redis.hgetall(keyspace.aggregate("acme-gmbh", day))
    assert counts["url:https://acme.de/crm"] == "1" and counts["topic:crm"] == "1"
    assert scan_events(config.events_dir).collect().height == 0


@pytest.mark.parametrize("header", [{"Sec-GPC": "1"}, {"DNT": "1"}])
def test_browser_privacy_signals_withhold_ads(client, redis, write_key, header):
    """Sec-GPC: 1 or DNT: 1 withholds ads whatever the page says."""
    _pixel(client, write_key, headers=header, consent="analytics,ads,email")
    (entry,) = _entries(redis)
    assert entry["consent"] == {"analytics": True, "ads": False, "email": True}


@pytest.mark.parametrize(
    ("addr", "stored"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("2001:db8:1234:5678:9abc:def0:1234:5678", "2001:db8:1234::"),
    ],
)
def test_ip_is_truncated_before_storage(client, redis, write_key, addr, stored):
    """IPv4 loses its last octet and IPv6 its last 80 bits before anything is stored."""
    client.get(
        "/p.gif",
        query_string={"k": write_key, "consent": "analytics"},
        environ_base={"REMOTE_ADDR": addr},
    )
    assert _entries(redis)[0]["ip"] == stored
    assert addr not in json.dumps(_entries(redis))


def test_withdrawn_consent_drops_the_cookie(client, redis, write_key, drain):
    """A known cookie arriving without analytics consent is expired and unlinked."""
    first = _pixel(client, write_key, consent="analytics")
    uid = first.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
    drain()
    resp = _pixel(client, write_key, consent="")
    assert (
        resp.headers["Set-Cookie"].startswith("dmp_uid=;")
        and "Max-Age=0" in resp.headers["Set-Cookie"]
    )
    drain()
    assert find_person(redis, Identifier(IdKind.UID, uid)) is None


def test_bots_never_become_persons(client, redis, config, write_key, drain):
    """A crawler's consented hit is stored flagged as a bot, without a person."""
    bot = {"User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}
    _pixel(client, write_key, headers=bot, consent="analytics")
    drain()
    log = scan_events(config.events_dir).collect()
    assert log["is_bot"].to_list() == [True] and log["person_id"].to_list() == [None]
    assert status(redis)["persons"] == {"low": 0, "medium": 0, "high": 0}


@pytest.mark.parametrize(
    ("query", "outcome"),
    [
        ({"k": "wk_unknown", "consent": "analytics"}, "unknown_key"),
        ({"k": "", "consent": "analytics"}, "unknown_key"),
        ({"k": "x" * 500}, "unknown_key"),
        ({"e": "<script>alert(1)</script>"}, "bad_input"),
        ({"e": "x" * 100}, "bad_input"),
        ({"url": "x" * 9000}, "bad_input"),
    ],
)
def test_bad_input_still_answers_the_gif(client, redis, write_key, query, outcome):
    """Unknown keys, bad event names and huge queries get the GIF, are counted, store nothing."""
    query = {"k": write_key, **query}
    resp = client.get("/p.gif", query_string=query)
    _assert_gif(resp)
    assert "Set-Cookie" not in resp.headers
    assert redis.xlen(keyspace.STREAM) == 0
    assert _metric(client, outcome) == 1


def test_garbage_bytes_in_the_query_get_the_gif(client, redis, write_key):
    """Undecodable bytes, odd parameters and wrong shapes never break the pixel."""
    for raw in (
        b"k=%ff%fe&e=%00",
        b"k=" + write_key.encode() + b"&topics=%ff,,,&url=javascript:x",
        b"&&&==&k",
        b"k[]=1&k[]=2",
    ):
        resp = client.get("/p.gif?" + raw.decode("latin-1"))
        _assert_gif(resp)
    stored = _entries(redis)
    assert all(e.get("url", "") == "" for e in stored)  # javascript: urls are dropped
    assert client.get("/healthz").status_code == 200


def test_head_answers_headers_and_other_methods_405(client, write_key):
    """HEAD gets the GIF's headers without a body; POST is a 405 problem."""
    head = client.head("/p.gif", query_string={"k": write_key})
    assert head.status_code == 200 and head.mimetype == "image/gif" and head.data == b""
    post = client.post("/p.gif")
    assert post.status_code == 405 and post.mimetype == "application/problem+json"


def test_forwarded_for_is_used_behind_a_trusted_proxy(config, redis, write_key):
    """With DMP_PROXY_HOPS=1 the client address comes from X-Forwarded-For (then truncated)."""
    from dmp.app import create_app

    behind = create_app(
        config.__class__(
            **{name: getattr(config, name) for name in config.__slots__} | {"proxy_hops": 1}
        )
    )
    client = behind.test_client()
    client.get(
        "/p.gif",
        query_string={"k": write_key, "consent": "analytics"},
        headers={"X-Forwarded-For": "198.51.100.23"},
    )
    behind.extensions["dmp"].appender.sync()
    assert _entries(redis)[0]["ip"] == "198.51.100.0"
