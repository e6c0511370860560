"""The Segment-spec HTTP API, driven by the real segment-analytics-python client and raw."""

from __future__ import annotations

import base64
import gzip
import json
import socket
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
import requests
from segment.analytics import Client
from segment.analytics.request import APIError

from dmp.ingest.eventlog import scan_events
from dmp.ingest.worker import status
from dmp.people.identity import Identifier, IdKind
from dmp.people.profiles import find_person
from dmp.storage import keyspace
from tests.factories import (
    GOOGLEBOT,
    bearer,
    consent_of,
    person_of,
    read_metric,
    scrape,
    stream_hits,
)

ADS_AND_ANALYTICS = {"consent": {"categoryPreferences": {"Advertising": True, "Analytics": True}}}


def _admin_person(client, admin_key: str, email: str) -> dict:
    resp = client.get("/api/v1/persons", query_string={"email": email}, headers=bearer(admin_key))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()


def _segment(live_url: str, server_key: str, **options) -> Client:
    return Client(server_key, host=live_url, sync_mode=True, max_retries=0, **options)


def _rows(config) -> list[dict]:
    return scan_events(config.events_dir).collect().sort("timestamp").to_dicts()


def _metric(client, outcome: str) -> float:
    """Return the API's dmp_hits_total for an outcome (0 while never counted)."""
    return read_metric(scrape(client), "dmp_hits_total", collector="api", outcome=outcome) or 0


def _post(client, server_key, path: str, body, **kwargs):
    return client.post(path, json=body, auth=(server_key, ""), **kwargs)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def _problem(resp, status: int, detail_part: str = "") -> None:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert body["status"] == status and body["title"] and body["type"].startswith("https://")
    assert detail_part in body.get("detail", ""), body


# -- the real client ------------------------------------------------------------------


@pytest.mark.parametrize("gzip_body", [False, True])
def test_real_client_calls_reach_the_log(
    live_url, client, redis, config, server_key, admin_key, drain, gzip_body
):
    """identify/track/page/screen/group/alias from segment-analytics-python are all stored."""
    segment = _segment(live_url, server_key, gzip=gzip_body)
    segment.identify("u-1", {"email": "Anna@Acme.de", "firstName": "Anna"}, ADS_AND_ANALYTICS)
    segment.track("u-1", "Whitepaper Downloaded", {"title": "CRM-Leitfaden", "topics": ["CRM"]})
    segment.page("u-1", "Docs", "Preise", {"url": "https://acme.de/preise"})
    segment.screen("u-1", "App", "Dashboard")
    segment.group("u-1", "acme-gmbh", {"employees": 250})
    segment.alias("u-1", "u-1-new")
    segment.flush()
    assert redis.xlen(keyspace.partition(0).stream) == 6
    drain()
    rows = _rows(config)
    assert sorted(r["type"] for r in rows) == sorted(
        ["identify", "track", "page", "screen", "group", "alias"]
    )
    assert {r["source"] for r in rows} == {"api"} and {r["channel"] for r in rows} == {"server"}
    assert len({r["person_id"] for r in rows}) == 1
    anna = _admin_person(client, admin_key, "anna@acme.de")
    assert anna["tier"] == "medium" and anna["traits"]["firstName"] == "Anna"
    assert consent_of(anna, "ads")["granted"] is True
    assert consent_of(anna, "analytics")["granted"] is True and "email" not in anna["consents"]
    assert "employees" not in anna["traits"]  # group traits describe the company
    assert person_of(redis, IdKind.USER, "u-1-new")["person_id"] == anna["person_id"]
    titles = {t.get("title") for t in anna["touchpoints"]}
    assert {"Preise", "Dashboard", "CRM-Leitfaden"} <= titles
    track = next(r for r in rows if r["type"] == "track")
    assert track["topics"] == ["crm"] and track["event"] == "Whitepaper Downloaded"
    assert _metric(client, "ok") == 6


def test_real_client_with_an_unknown_key_gets_401(live_url, client, redis):
    """The client sees the 401 as an APIError; nothing is stored."""
    with pytest.raises(APIError) as failure:
        _segment(live_url, "wk_nobody").track("u", "Clicked")
    assert failure.value.status == 401
    assert redis.xlen(keyspace.partition(0).stream) == 0 and _metric(client, "unknown_key") == 1


def test_real_client_backdated_event_keeps_its_time(live_url, config, server_key, drain):
    """An event the client dates an hour back is stored an hour back (sentAt is now)."""
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    _segment(live_url, server_key).track("u-9", "Imported", timestamp=hour_ago)
    drain()
    (row,) = _rows(config)
    assert abs(row["timestamp"] - hour_ago) < timedelta(seconds=5)
    assert timedelta(minutes=59) < row["received_at"] - row["timestamp"] < timedelta(minutes=61)


def test_context_traits_count(live_url, redis, server_key, drain):
    """An email in context.traits of a track call identifies the person too."""
    segment = _segment(live_url, server_key)
    segment.track("u-2", "Demo Requested", context={"traits": {"email": "ben@acme.de"}})
    segment.flush()
    drain()
    ben = person_of(redis, IdKind.EMAIL, "ben@acme.de")
    assert ben["tier"] == "medium" and ben["traits"]["email"] == "ben@acme.de"
    assert person_of(redis, IdKind.USER, "u-2")["person_id"] == ben["person_id"]


def test_email_and_phone_make_a_person_high(client, redis, server_key, drain):
    """Traits with email and phone (raw call) lift the person to high."""
    body = {"userId": "u-h", "traits": {"email": "h@acme.de", "phone": "+49 30 1234567"}}
    assert _post(client, server_key, "/v1/identify", body).status_code == 200
    drain()
    assert person_of(redis, IdKind.EMAIL, "h@acme.de")["tier"] == "high"


# -- raw calls -----------------------------------------------------------------------

_CALLS = [
    ("identify", {"userId": "u-r", "traits": {"email": "r@acme.de"}}),
    ("track", {"userId": "u-r", "event": "Signed Up", "properties": {"plan": "pro"}}),
    ("page", {"anonymousId": "a-r", "name": "Home", "properties": {"url": "https://acme.de/"}}),
    ("screen", {"userId": "u-r", "name": "Dashboard"}),
    ("group", {"userId": "u-r", "groupId": "g-1", "traits": {"name": "Acme"}}),
    ("alias", {"userId": "u-r2", "previousId": "u-r"}),
]


@pytest.mark.parametrize(("kind", "body"), _CALLS)
def test_single_calls_with_basic_auth(client, redis, config, server_key, drain, kind, body):
    """Each /v1/<call> with the write key as Basic-auth user is accepted and stored."""
    resp = _post(client, server_key, f"/v1/{kind}", {**body, "messageId": f"m-{kind}"})
    assert resp.status_code == 200 and resp.get_json() == {"success": True}
    (entry,) = (hit._asdict() for hit in stream_hits(redis))
    assert entry["type"] == kind and entry["source"] == "api" and entry["site_id"] == "acme-gmbh"
    drain()
    (row,) = _rows(config)
    assert (row["type"], row["event_id"]) == (kind, f"m-{kind}")
    assert row["person_id"] is not None


def test_raw_batch_of_every_call(client, config, server_key, drain):
    """A raw batch carries every call type; all of them are stored."""
    batch = [{"type": kind, **body} for kind, body in _CALLS]
    assert _post(client, server_key, "/v1/batch", {"batch": batch}).status_code == 200
    drain()
    assert sorted(r["type"] for r in _rows(config)) == sorted(k for k, _ in _CALLS)


def test_import_is_an_alias_of_batch(client, redis, server_key):
    """/v1/import takes the same body as /v1/batch."""
    body = {"batch": [{"type": "track", "userId": "u", "event": "E"}]}
    assert _post(client, server_key, "/v1/import", body).status_code == 200
    assert redis.xlen(keyspace.partition(0).stream) == 1


def test_write_key_in_body_is_accepted(client, server_key, redis):
    """The write key may also travel as writeKey in the body."""
    resp = client.post("/v1/track", json={"writeKey": server_key, "userId": "u", "event": "E"})
    assert resp.status_code == 200 and redis.xlen(keyspace.partition(0).stream) == 1


def test_group_traits_are_not_the_persons(client, redis, config, server_key, drain):
    """A group's traits (a company email) are kept on the event, never made the person's."""
    body = {"userId": "u-g", "groupId": "acme", "traits": {"email": "info@acme.de", "size": 9}}
    assert _post(client, server_key, "/v1/group", body).status_code == 200
    drain()
    assert find_person(redis, Identifier(IdKind.EMAIL, "info@acme.de")) is None
    person = person_of(redis, IdKind.USER, "u-g")
    assert person["tier"] != "medium" and "email" not in person["traits"]
    (row,) = _rows(config)
    assert json.loads(row["properties"])["group_traits"] == {"email": "info@acme.de", "size": 9}


def test_batch_context_applies_to_each_message(client, redis, config, server_key, drain):
    """A batch-level context reaches every message; a message's own context wins."""
    body = {
        "context": {"ip": "203.0.113.9", "traits": {"company": "Acme"}},
        "batch": [
            {"type": "track", "userId": "u-c", "event": "A", "context": None},
            {"type": "track", "userId": "u-c", "event": "B", "context": {"ip": "198.51.100.7"}},
        ],
    }
    assert _post(client, server_key, "/v1/batch", body).status_code == 200
    drain()
    assert sorted(r["ip"] for r in _rows(config)) == ["198.51.100.0", "203.0.113.0"]
    assert person_of(redis, IdKind.USER, "u-c")["traits"]["company"] == "Acme"


def test_context_ip_and_agent_are_enriched(client, config, server_key, drain):
    """context.ip is truncated before storage; context.userAgent gives browser and device."""
    ua = (
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
        "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
    )
    ip = "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff"
    body = {"userId": "u-e", "event": "E", "context": {"ip": ip, "userAgent": ua}}
    assert _post(client, server_key, "/v1/track", body).status_code == 200
    drain()
    (row,) = _rows(config)
    assert row["ip"] == "2001:db8:aaaa::" and row["device"] == "mobile" and row["os"] == "iOS"


def test_bots_through_the_api_never_become_persons(client, redis, config, server_key, drain):
    """A message whose context.userAgent is a crawler is stored flagged, without a person."""
    body = {"userId": "u-bot", "event": "E", "context": {"userAgent": GOOGLEBOT}}
    assert _post(client, server_key, "/v1/track", body).status_code == 200
    drain()
    (row,) = _rows(config)
    assert row["is_bot"] is True and row["person_id"] is None
    assert find_person(redis, Identifier(IdKind.USER, "u-bot")) is None


# -- consent -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefs", "expected"),
    [
        ({"Advertising": True, "Analytics": True}, {"ads": True, "analytics": True}),
        ({"Marketing": True, "Email": True}, {"ads": True, "email": True}),
        ({"C0002": True, "C0004": False}, {"analytics": True, "ads": False}),
        ({"Functional": True}, {}),
    ],
)
def test_category_preferences_are_mapped(client, server_key, admin_key, drain, prefs, expected):
    """context.consent.categoryPreferences become dmp consents, shown in the admin API."""
    body = {
        "userId": "u-k",
        "traits": {"email": "k@acme.de"},
        "context": {"consent": {"categoryPreferences": prefs}},
    }
    assert _post(client, server_key, "/v1/identify", body).status_code == 200
    drain()
    consents = _admin_person(client, admin_key, "k@acme.de")["consents"]
    assert {c: p["granted"] for c, (p,) in consents.items()} == expected
    assert all(
        p["source"] == "api" and p["site"] == "acme-gmbh" and p["identifier"] == "email:k@acme.de"
        for (p,) in consents.values()
    )


def test_without_consent_no_ads_or_email_is_granted(live_url, client, server_key, admin_key, drain):
    """A server-side event without categoryPreferences is stored but grants nothing."""
    _segment(live_url, server_key).identify("u-3", {"email": "c@acme.de"})
    drain()
    person = _admin_person(client, admin_key, "c@acme.de")
    assert person["consents"] == {} and person["tier"] == "medium"


def test_refused_analytics_counts_only_in_aggregate(client, redis, config, server_key, drain):
    """categoryPreferences refusing analytics keep the event out of every profile."""
    body = {
        "userId": "u-4",
        "event": "Viewed",
        "properties": {"url": "https://acme.de/x?y=1", "topics": ["crm"]},
        "context": {
            "traits": {"email": "no@acme.de"},
            "consent": {"categoryPreferences": {"Analytics": False, "Advertising": True}},
        },
    }
    assert _post(client, server_key, "/v1/track", body).status_code == 200
    drain()
    assert status(redis)["events_aggregate"] == 1 and status(redis)["events_stored"] == 0
    assert find_person(redis, Identifier(IdKind.USER, "u-4")) is None
    assert find_person(redis, Identifier(IdKind.EMAIL, "no@acme.de")) is None
    assert _rows(config) == []
    counts = redis.hgetall(
        keyspace.partition(0).aggregate("acme-gmbh", datetime.now(UTC).strftime("%Y%m%d"))
    )
    assert counts["url:https://acme.de/x"] == "1" and counts["topic:crm"] == "1"


# -- time ------------------------------------------------------------------------------


def _now_ms() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@pytest.mark.parametrize(
    ("fields", "skew"),
    [
        # sentAt an hour ahead of the server, the event 5 min before sending: 5 min back.
        ({"timestamp": 55, "batch_sentAt": 60}, timedelta(minutes=5)),
        ({"originalTimestamp": 58, "timestamp": 10, "batch_sentAt": 60}, timedelta(minutes=2)),
        ({"timestamp": 50, "sentAt": 60, "batch_sentAt": 0}, timedelta(minutes=10)),
        ({"timestamp": -120, "batch_sentAt": -119}, timedelta(minutes=1)),  # clock behind
    ],
)
def test_clock_skew_is_corrected(client, config, server_key, drain, fields, skew):
    """timestamp = receivedAt − (sentAt − originalTimestamp or timestamp), to the ms."""
    base = _now_ms()
    msg = {"type": "track", "userId": "u-5", "event": "Clicked", "messageId": "skew-0001"}
    body: dict = {"batch": [msg]}
    for name, minutes in fields.items():
        moment = _iso(base + timedelta(minutes=minutes))
        if name == "batch_sentAt":
            body["sentAt"] = moment
        else:
            msg[name] = moment
    assert _post(client, server_key, "/v1/batch", body).status_code == 200
    drain()
    (row,) = _rows(config)
    assert row["received_at"] - row["timestamp"] == skew


def test_time_without_sent_at_is_taken_as_is(client, config, server_key, drain):
    """Without sentAt the client's timestamp is stored unchanged; without both, receivedAt."""
    when = _now_ms() - timedelta(days=3)
    calls = [
        {"userId": "u", "event": "Old", "timestamp": when.isoformat()},
        {"userId": "u", "event": "Now"},
        {"userId": "u", "event": "Naive", "timestamp": "2024-05-01T10:00:00"},  # naive = UTC
    ]
    for body in calls:
        assert _post(client, server_key, "/v1/track", body).status_code == 200
    drain()
    by_event = {r["event"]: r for r in _rows(config)}
    assert by_event["Old"]["timestamp"] == when
    assert by_event["Now"]["timestamp"] == by_event["Now"]["received_at"]
    assert by_event["Naive"]["timestamp"] == datetime(2024, 5, 1, 10, tzinfo=UTC)


def test_nonsense_clocks_fall_back_to_received_time(client, config, server_key, drain):
    """A correction that lands before 1970 is not believed: receivedAt is stored."""
    body = {
        "sentAt": "2099-12-31T00:00:00Z",
        "batch": [{"type": "track", "userId": "u", "event": "E", "timestamp": "1970-01-02T00:00Z"}],
    }
    assert _post(client, server_key, "/v1/batch", body).status_code == 200
    assert drain() == 1
    (row,) = _rows(config)
    assert row["timestamp"] == row["received_at"]


# -- dedup ------------------------------------------------------------------------------


def test_message_id_dedup_within_a_batch_across_requests_and_drains(
    live_url, client, config, server_key, drain
):
    """The same messageId sent again — same batch, next request, after a drain — is one row."""
    msg = {"type": "track", "userId": "u-6", "event": "Signed Up", "messageId": "mid-000042"}
    assert _post(client, server_key, "/v1/batch", {"batch": [msg, msg]}).status_code == 200
    assert _post(client, server_key, "/v1/track", msg).status_code == 200
    drain()
    assert _post(client, server_key, "/v1/batch", {"batch": [msg]}).status_code == 200
    _segment(live_url, server_key).track("u-6", "Signed Up", message_id="mid-000042")
    drain()
    assert [r["event_id"] for r in _rows(config)] == ["mid-000042"]
    assert status(client.application.extensions["dmp"].redis)["events_stored"] == 1


def test_distinct_message_ids_are_all_kept(client, config, server_key, drain):
    """Different messageIds with the same content are different events."""
    batch = [
        {"type": "track", "userId": "u", "event": "E", "messageId": f"m-{i}"} for i in range(5)
    ]
    assert _post(client, server_key, "/v1/batch", {"batch": batch}).status_code == 200
    drain()
    assert len(_rows(config)) == 5


# -- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "detail"),
    [
        ("/v1/track", {"userId": "u", "event": ""}, "track.event"),
        ("/v1/track", {"userId": "u"}, "track.event"),
        ("/v1/track", {"userId": "u", "event": 5}, "track.event"),
        ("/v1/track", {"event": "E"}, "userId or anonymousId"),
        ("/v1/track", {"userId": "", "anonymousId": None, "event": "E"}, "userId or anonymousId"),
        ("/v1/identify", {"userId": {"id": 1}}, "identify.userId"),
        ("/v1/identify", {"userId": True}, "identify.userId"),
        ("/v1/identify", {"anonymousId": ["a"]}, "identify.anonymousId"),
        ("/v1/identify", {"userId": "u", "traits": "email=a@b.de"}, "identify.traits"),
        ("/v1/identify", {"userId": "u", "context": {"traits": "x"}}, "identify.context.traits"),
        ("/v1/track", {"userId": "u", "event": "E", "properties": [1]}, "track.properties"),
        ("/v1/track", {"userId": "u", "event": "E", "timestamp": "yesterday"}, "track.timestamp"),
        ("/v1/track", {"userId": "u", "event": "E", "timestamp": 1700000000}, "track.timestamp"),
        ("/v1/track", {"userId": "u", "event": "E", "timestamp": "0001-01-01"}, "track.timestamp"),
        ("/v1/track", {"userId": "u", "event": "E", "sentAt": "soon"}, "track.sentAt"),
        ("/v1/track", {"userId": "u", "event": "E", "context": []}, "track.context"),
        ("/v1/page", {"userId": "u", "context": {"page": "x"}}, "page.context.page"),
        ("/v1/group", {"userId": "u", "groupId": {}}, "group.groupId"),
        ("/v1/alias", {"userId": "u", "previousId": [1]}, "alias.previousId"),
        ("/v1/track", {"userId": "u" * 300, "event": "E"}, "at most 256"),
        ("/v1/batch", {"batch": {"type": "track"}}, "batch"),
        ("/v1/batch", {"batch": "[]"}, "batch"),
        ("/v1/batch", {}, "batch"),
        ("/v1/batch", {"batch": [], "sentAt": "later"}, "sentAt"),
        ("/v1/batch", {"batch": [], "context": "x"}, "context"),
        ("/v1/batch", {"batch": [{"type": "track", "userId": "u", "event": "ok"}, 5]}, "batch[1]"),
        ("/v1/batch", {"batch": [{"type": "explode", "userId": "u"}]}, "batch[0].type"),
        ("/v1/batch", {"batch": [{"userId": "u", "event": "E"}]}, "batch[0].type"),
        (
            "/v1/batch",
            {
                "context": {"ip": "1.2.3.4"},
                "batch": [{"type": "page", "userId": "u", "context": 7}],
            },
            "batch[0].context",
        ),
        (
            "/v1/batch",
            {"batch": [{"type": "track", "userId": "u", "event": "E", "context": {"traits": 1}}]},
            "batch[0].context.traits",
        ),
    ],
)
def test_wrong_types_are_400_with_the_field_path(client, redis, server_key, path, body, detail):
    """Wrong types and missing fields answer 400 problem+json naming the path; nothing stored."""
    _problem(_post(client, server_key, path, body), 400, detail)
    assert redis.xlen(keyspace.partition(0).stream) == 0
    assert _metric(client, "bad_input") == 1


def test_a_bad_message_rejects_its_whole_batch(client, redis, server_key, drain):
    """A batch is stored all together or not at all."""
    good = {"type": "track", "userId": "u", "event": "ok"}
    batch = [good, {"type": "track", "userId": "u"}, {**good, "messageId": "third-0001"}]
    _problem(_post(client, server_key, "/v1/batch", {"batch": batch}), 400, "batch[1].event")
    assert redis.xlen(keyspace.partition(0).stream) == 0
    assert drain() == 0 and status(redis)["events_stored"] == 0
    assert _metric(client, "ok") == 0 and _metric(client, "bad_input") == 1


@pytest.mark.parametrize(
    ("data", "headers", "detail"),
    [
        (b"{not json", {}, "not valid JSON"),
        (b"", {}, "not valid JSON"),
        (b"[1, 2]", {}, "JSON object"),
        (b"null", {}, "JSON object"),
        (b'"track"', {}, "JSON object"),
        (b"\xff\xfe\x00", {}, "not valid JSON"),
        (b'{"userId": "u", "event": "E"', {}, "not valid JSON"),
        (b"not gzip at all", {"Content-Encoding": "gzip"}, "gzip"),
        (gzip.compress(b"[1]"), {"Content-Encoding": "gzip"}, "JSON object"),
    ],
)
def test_malformed_bodies_are_400(client, redis, server_key, data, headers, detail):
    """Malformed JSON, non-objects and corrupt gzip answer 400 problem+json."""
    resp = client.post(
        "/v1/track",
        data=data,
        headers={"Content-Type": "application/json", **headers},
        auth=(server_key, ""),
    )
    _problem(resp, 400, detail)
    assert redis.xlen(keyspace.partition(0).stream) == 0


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b'{"userId": "u", "event": "E\\ud800"}', "surrogate"),
        (b'{"userId": "u", "event": "E", "properties": {"x": NaN}}', "NaN"),
        (b'{"userId": "u", "event": "E", "properties": {"x": -Infinity}}', "Infinity"),
    ],
)
def test_json_no_reader_can_take_back_is_400(client, redis, server_key, raw, detail):
    """Unpaired surrogates and NaN/Infinity (Python's JSON takes them) are refused."""
    resp = client.post(
        "/v1/track", data=raw, content_type="application/json", auth=(server_key, "")
    )
    _problem(resp, 400, detail)
    assert redis.xlen(keyspace.partition(0).stream) == 0


def test_size_limits(client, redis, server_key):
    """Over 32 KB per call or event, or 500 KB per batch (also unzipped), is refused."""
    big = {"userId": "u", "event": "E", "properties": {"blob": "x" * 33_000}}
    _problem(_post(client, server_key, "/v1/track", big), 400, "at most 32768 bytes")
    msg = {"type": "track", "userId": "u", "event": "E", "properties": {"blob": "x" * 30_000}}
    huge = {"batch": [msg] * 20}  # 600 KB
    _problem(_post(client, server_key, "/v1/batch", huge), 400, "at most 512000 bytes")
    one_big = {"batch": [msg, {**msg, "properties": {"blob": "x" * 40_000}}]}
    _problem(_post(client, server_key, "/v1/batch", one_big), 400, "batch[1]: an event may be")
    assert redis.xlen(keyspace.partition(0).stream) == 0


def test_events_just_under_the_limits_are_accepted(client, redis, server_key):
    """A 31 KB event, a 480 KB batch and a 24 KB event of umlauts (UTF-8 bytes) pass."""
    msg = {"type": "track", "userId": "u", "event": "E", "properties": {"blob": "x" * 31_000}}
    assert _post(client, server_key, "/v1/batch", {"batch": [msg]}).status_code == 200
    small = {**msg, "properties": {"blob": "x" * 23_000}}
    assert _post(client, server_key, "/v1/batch", {"batch": [small] * 20}).status_code == 200
    umlauts = {**msg, "properties": {"text": "ü" * 12_000}}  # 24 KB as UTF-8
    raw = json.dumps({"batch": [umlauts]}, ensure_ascii=False).encode()
    resp = client.post(
        "/v1/batch", data=raw, content_type="application/json", auth=(server_key, "")
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert redis.xlen(keyspace.partition(0).stream) == 22


@pytest.mark.parametrize(
    "plain",
    [
        json.dumps({"batch": [{"type": "track", "userId": "u", "event": "x" * 100}] * 6000}),
        '{"batch": [' + " " * 20_000_000 + "]}",  # 20 MB of spaces: a 20 KB download
    ],
)
def test_gzip_bombs_are_refused(client, redis, server_key, plain):
    """A small gzip body that unpacks past the batch limit is refused before it is parsed."""
    bomb = gzip.compress(plain.encode())
    assert len(bomb) < 512_000
    resp = client.post(
        "/v1/batch",
        data=bomb,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        auth=(server_key, ""),
    )
    _problem(resp, 400, "unzipped")
    assert redis.xlen(keyspace.partition(0).stream) == 0


def test_gzip_bodies_are_read(client, redis, server_key):
    """A gzip body within the limits is accepted like a plain one."""
    body = gzip.compress(
        json.dumps({"batch": [{"type": "track", "userId": "u", "event": "Z"}]}).encode()
    )
    resp = client.post(
        "/v1/batch", data=body, headers={"Content-Encoding": "GZIP"}, auth=(server_key, "")
    )
    assert resp.status_code == 200 and redis.xlen(keyspace.partition(0).stream) == 1


def _raw_http(live_url: str, head: bytes, body: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes over a socket and return the whole answer (until close or timeout)."""
    parts = urlsplit(live_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def _request_head(server_key: str, content_length: int) -> bytes:
    auth = base64.b64encode(f"{server_key}:".encode()).decode()
    return (
        "POST /v1/batch HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Authorization: Basic {auth}\r\nContent-Length: {content_length}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


def test_content_length_lies_are_refused(live_url, server_key, redis):
    """Declared lengths past the limit, or shorter than the body, never store anything."""
    good = json.dumps({"batch": [{"type": "track", "userId": "u", "event": "E"}]}).encode()
    # Claims 10 MB, sends a small body: refused from the header alone, without waiting.
    answer = _raw_http(live_url, _request_head(server_key, 10_000_000), good)
    assert answer.startswith(b"HTTP/1.1 400") and b"application/problem+json" in answer
    # Claims fewer bytes than it sends: only the declared bytes are read, which are no JSON.
    answer = _raw_http(live_url, _request_head(server_key, len(good) // 2), good)
    assert answer.startswith(b"HTTP/1.1 400") and b"not valid JSON" in answer
    # Honest but too big.
    resp = requests.post(
        f"{live_url}/v1/batch",
        data=b"{" + b" " * 600_000 + b"}",
        auth=(server_key, ""),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert resp.status_code == 400
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert redis.xlen(keyspace.partition(0).stream) == 0
    assert requests.get(f"{live_url}/healthz", timeout=5).status_code == 200


def test_server_keeps_serving_after_bad_input(live_url, redis, config, server_key, drain):
    """After malformed, oversize and bomb requests the real client is still served."""
    url = f"{live_url}/v1/batch"
    auth = (server_key, "")
    bad = [
        requests.post(url, data=b"{oops", auth=auth, timeout=5),
        requests.post(url, json={"batch": [{"type": "track"}]}, auth=auth, timeout=5),
        requests.post(
            url,
            data=gzip.compress(b" " * 5_000_000),
            headers={"Content-Encoding": "gzip"},
            auth=auth,
            timeout=5,
        ),
        requests.post(f"{live_url}/v1/track", json={"userId": "u", "event": "E"}, timeout=5),
    ]
    assert [r.status_code for r in bad] == [400, 400, 400, 401]
    assert all(r.headers["Content-Type"] == "application/problem+json" for r in bad)
    _segment(live_url, server_key).track("u-ok", "Still Here")
    drain()
    assert [r["event"] for r in _rows(config)] == ["Still Here"]


def test_deeply_nested_json_is_400(client, redis, server_key):
    """JSON nested deeper than the parser's recursion limit is a 400, not a 500."""
    for data in (b"[" * 30_000, b'{"userId":"u","event":"E","properties":' + b"[" * 5000):
        resp = client.post(
            "/v1/track", data=data, content_type="application/json", auth=(server_key, "")
        )
        _problem(resp, 400, "JSON")
    assert redis.xlen(keyspace.partition(0).stream) == 0


@pytest.mark.parametrize(
    "auth", [("wk_nope", ""), None, ("", ""), ("wk_" + "x" * 200, ""), ("\u00e9", "")]
)
def test_unknown_write_key_is_401(client, redis, auth):
    """Without a known write key the API answers 401 and stores nothing."""
    _problem(client.post("/v1/track", json={"userId": "u", "event": "E"}, auth=auth), 401)
    assert redis.xlen(keyspace.partition(0).stream) == 0
    assert _metric(client, "unknown_key") == 1


@pytest.mark.parametrize(
    ("key", "status"),
    [('"\\ud800"', 400), ('"wk_\\u00e9"', 401), ("5", 401), ("null", 401), ('["wk"]', 401)],
)
def test_unknown_body_write_key_is_4xx(client, redis, key, status):
    """A writeKey in the body that is no key is a 401 (400 if it is not even text), never 500."""
    raw = f'{{"writeKey": {key}, "userId": "u", "event": "E"}}'.encode()
    _problem(client.post("/v1/track", data=raw, content_type="application/json"), status)
    assert redis.xlen(keyspace.partition(0).stream) == 0


def test_garbled_basic_auth_is_401(client, redis):
    """An Authorization header that is no valid Basic credential is an unknown key."""
    for header in ("Basic !!!not-base64", "Basic " + "/w==", "Bearer wk_something"):
        resp = client.post(
            "/v1/track", json={"userId": "u", "event": "E"}, headers={"Authorization": header}
        )
        _problem(resp, 401)
    assert redis.xlen(keyspace.partition(0).stream) == 0


@pytest.mark.parametrize("path", ["/v1/explode", "/v1/foo", "/v1/Track"])
def test_unknown_call_is_404(client, server_key, path):
    """Only the spec's calls exist."""
    _problem(_post(client, server_key, path, {"userId": "u", "event": "E"}), 404, path)


def test_wrong_method_is_405(client):
    """The calls take POST only."""
    _problem(client.get("/v1/track"), 405)
    _problem(client.get("/v1/batch"), 405)


# -- analytics.js 2.0: short paths, pages, channel -------------------------------------

PAGE = "http://localhost:3000"  # the test site's domains are acme.de and localhost


def _from_page(client, key: str, path: str, body, origin: str = PAGE, **headers):
    """Post as analytics.js 2.0 does: JSON as text/plain, the key as Basic user, an Origin."""
    return client.post(
        path,
        data=json.dumps(body),
        auth=(key, ""),
        headers={"Content-Type": "text/plain", "Origin": origin, **headers},
    )


@pytest.mark.parametrize(("short", "kind", "body"), [(k[0], k, b) for k, b in _CALLS])
def test_short_paths_are_the_long_ones(client, redis, config, server_key, drain, short, kind, body):
    """/v1/i, /v1/t, /v1/p, /v1/s, /v1/g and /v1/a are identify … alias, stored as such."""
    resp = _post(client, server_key, f"/v1/{short}", {**body, "messageId": f"s-{kind}"})
    assert resp.status_code == 200 and resp.get_json() == {"success": True}
    drain()
    (row,) = _rows(config)
    assert (row["type"], row["event_id"], row["channel"]) == (kind, f"s-{kind}", "server")


def test_short_batch_path_is_batch(client, redis, server_key):
    """/v1/b takes what /v1/batch takes (analytics.js batching), bad input alike."""
    batch = [{"type": kind, **body} for kind, body in _CALLS]
    assert _post(client, server_key, "/v1/b", {"batch": batch}).status_code == 200
    assert redis.xlen(keyspace.partition(0).stream) == len(_CALLS)
    _problem(_post(client, server_key, "/v1/b", {"batch": [{"type": "x"}]}), 400, "batch[0].type")
    assert redis.xlen(keyspace.partition(0).stream) == len(_CALLS)


@pytest.mark.parametrize("path", ["/v1/x", "/v1/ti", "/v1/I", "/v1/bb", "/v1/" + "t" * 5000])
def test_other_short_paths_are_404(client, server_key, path):
    """Only the six first letters and b are short paths."""
    resp = _post(client, server_key, path, {"userId": "u", "event": "E"})
    assert resp.status_code == 404 and resp.mimetype == "application/problem+json"


def test_a_page_of_the_site_is_answered_readably_as_browser(
    client, redis, config, write_key, drain
):
    """The public write key from a page of the site: stored as a browser's claim, and the
    answer carries the page's origin so the SDK reads its success (and does not resend)."""
    body = {"anonymousId": "a-1", "event": "Clicked", "context": ADS_AND_ANALYTICS}
    resp = _from_page(client, write_key, "/v1/t", body, "https://blog.acme.de")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.headers["Access-Control-Allow-Origin"] == "https://blog.acme.de"
    (hit,) = stream_hits(redis)
    assert hit.channel == "browser" and hit.trusted is False
    drain()
    assert _rows(config)[0]["channel"] == "browser"


def test_a_page_of_another_origin_is_refused_readably(client, redis, write_key, caplog):
    """The public write key from a page not of its site: 403 the page can read, counted
    as origin_not_allowed and logged; nothing stored."""
    body = {"batch": [{"type": "track", "anonymousId": "a", "event": "E"}]}
    resp = _from_page(client, write_key, "/v1/b", body, "https://acme.de.evil.example")
    _problem(resp, 403, "https://acme.de.evil.example is not a domain of the site")
    assert resp.headers["Access-Control-Allow-Origin"] == "https://acme.de.evil.example"
    assert redis.xlen(keyspace.partition(0).stream) == 0
    assert _metric(client, "origin_not_allowed") == 1
    assert any("acme.de.evil.example" in r.getMessage() for r in caplog.records)


def test_a_server_key_in_a_page_is_refused(client, redis, server_key):
    """A server key sent by a page (even of the site) is refused: the secret is exposed,
    and a page's claims must never be stored as trusted."""
    resp = _from_page(client, server_key, "/v1/t", {"userId": "u", "event": "E"})
    _problem(resp, 403, "server key is a secret")
    assert resp.headers["Access-Control-Allow-Origin"] == PAGE
    assert redis.xlen(keyspace.partition(0).stream) == 0
    assert _metric(client, "server_key_in_page") == 1


@pytest.mark.parametrize(
    ("key", "body", "status"),
    [
        ("wk_nobody", {"userId": "u", "event": "E"}, 401),
        (None, {"userId": "u"}, 400),
        (None, {"userId": "u", "event": "E", "properties": {"x": "y" * 40_000}}, 400),
    ],
)
def test_refusals_are_readable_by_the_page(client, write_key, key, body, status):
    """Unknown keys and bad or oversize messages from a page carry its origin: the
    console shows the problem, not a CORS error."""
    resp = _from_page(client, key or write_key, "/v1/track", body)
    _problem(resp, status)
    assert resp.headers["Access-Control-Allow-Origin"] == PAGE


@pytest.mark.parametrize("path", ["/v1/t", "/v1/track", "/v1/b", "/v1/batch", "/v1/import"])
def test_preflight_for_a_page_of_some_site(client, write_key, path):
    """The preflight of a page of some site's domain allows the POST with Authorization,
    Content-Type and X-Retry-Count (the key is checked on the POST itself)."""
    resp = client.options(
        path,
        headers={
            "Origin": PAGE,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type,x-retry-count",
        },
    )
    assert resp.status_code == 204
    assert resp.headers["Access-Control-Allow-Origin"] == PAGE
    allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "x-retry-count"} <= allowed
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    assert int(resp.headers["Access-Control-Max-Age"]) > 0


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "", "https://acme.de.evil"])
def test_preflight_for_an_origin_of_no_site_is_refused(client, write_key, origin):
    """An origin that belongs to no site (or none at all) gets no CORS grant."""
    headers = {"Origin": origin} if origin else {}
    resp = client.options("/v1/t", headers={**headers, "Access-Control-Request-Method": "POST"})
    assert resp.status_code == 403 and resp.mimetype == "application/problem+json"
    assert "Access-Control-Allow-Methods" not in resp.headers


def test_preflight_of_no_call_is_404(client, write_key):
    """A preflight names a path that exists, or gets a 404."""
    resp = client.options("/v1/explode", headers={"Origin": PAGE})
    assert resp.status_code == 404 and resp.mimetype == "application/problem+json"


@pytest.mark.parametrize(
    ("key_kind", "origin", "claimed", "channel"),
    [
        ("server", "", "mobile", "server"),  # the key says server, whatever the message says
        ("server", "", None, "server"),
        ("write", PAGE, None, "browser"),  # a page: analytics.js sends no channel
        ("write", PAGE, "mobile", "browser"),
        ("write", PAGE, "server", "browser"),  # a page cannot claim to be a server
        ("write", "", "mobile", "mobile"),  # an app with the public key says what it is
        ("write", "", "browser", "browser"),
        ("write", "", "tv-set", "server"),  # not one of Segment's channels
        ("write", "", None, "server"),
        ("write", "", 5, "server"),
    ],
)
def test_channel_by_key_kind_and_request(
    client, redis, server_key, write_key, key_kind, origin, claimed, channel
):
    """The channel comes from the key and the Origin; the message's own counts only where
    they cannot tell (the public key without an Origin) and it is one of Segment's."""
    key = server_key if key_kind == "server" else write_key
    body = {"userId": "u", "event": "E", **({} if claimed is None else {"channel": claimed})}
    headers = {"Origin": origin} if origin else {}
    resp = client.post("/v1/track", json=body, auth=(key, ""), headers=headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    (hit,) = stream_hits(redis)
    assert hit.channel == channel
