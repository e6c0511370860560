"""The Segment-spec HTTP API, driven by the real segment-analytics-python client and raw."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta

import pytest
import requests
from segment.analytics import Client

from dmp import keyspace
from dmp.eventlog import scan_events
from dmp.identity import Identifier, IdKind
from dmp.profiles import find_person, get_person
from dmp.worker import status


def _person(redis, kind: IdKind, value: str) -> dict:
    pid = find_person(redis, Identifier(kind, value))
    assert pid, f"nobody owns {kind.value}:{value}"
    return get_person(redis, pid)


def _segment(live_url: str, write_key: str, **options) -> Client:
    return Client(write_key, host=live_url, sync_mode=True, max_retries=0, **options)


@pytest.mark.parametrize("gzip_body", [False, True])
def test_real_client_calls_reach_the_log(live_url, redis, config, write_key, drain, gzip_body):
    """identify/track/page/screen/group/alias from segment-analytics-python are all stored."""
    consent = {"consent": {"categoryPreferences": {"Analytics": True, "Advertising": True}}}
    client = _segment(live_url, write_key, gzip=gzip_body)
    client.identify("u-1", {"email": "Anna@Acme.de", "firstName": "Anna"}, context=consent)
    client.track("u-1", "Whitepaper Downloaded", {"title": "CRM-Leitfaden", "topics": ["crm"]})
    client.page("u-1", "Docs", "Preise", {"url": "https://acme.de/preise"})
    client.screen("u-1", "App", "Dashboard")
    client.group("u-1", "acme-gmbh", {"employees": 250})
    client.alias("u-1", "u-1-new")
    client.flush()
    drain()
    log = scan_events(config.events_dir).collect()
    assert sorted(log["type"].to_list()) == sorted(
        ["identify", "track", "page", "screen", "group", "alias"]
    )
    assert log["source"].unique().to_list() == ["api"]
    anna = _person(redis, IdKind.EMAIL, "anna@acme.de")
    assert anna["tier"] == "medium" and anna["traits"]["firstName"] == "Anna"
    assert anna["consents"]["ads"]["granted"] is True and "email" not in anna["consents"]
    assert _person(redis, IdKind.USER, "u-1-new")["person_id"] == anna["person_id"]
    titles = {t.get("title") for t in anna["touchpoints"]}
    assert {"Preise", "Dashboard"} <= titles


def test_context_traits_count(live_url, redis, write_key, drain):
    """An email in context.traits of a track call identifies the person too."""
    client = _segment(live_url, write_key)
    client.track("u-2", "Demo Requested", context={"traits": {"email": "ben@acme.de"}})
    client.flush()
    drain()
    assert _person(redis, IdKind.EMAIL, "ben@acme.de")["tier"] == "medium"


def test_without_consent_no_ads_or_email_is_granted(live_url, redis, write_key, drain):
    """A server-side event without categoryPreferences is stored but grants nothing."""
    client = _segment(live_url, write_key)
    client.identify("u-3", {"email": "c@acme.de"})
    client.flush()
    drain()
    assert _person(redis, IdKind.EMAIL, "c@acme.de")["consents"] == {}


def test_refused_analytics_counts_only_in_aggregate(client, redis, write_key, drain):
    """categoryPreferences refusing analytics keep the event out of every profile."""
    body = {
        "userId": "u-4",
        "event": "Viewed",
        "context": {"consent": {"categoryPreferences": {"Analytics": False}}},
    }
    assert client.post("/v1/track", json=body, auth=(write_key, "")).status_code == 200
    drain()
    assert status(redis)["events_aggregate"] == 1 and status(redis)["events_stored"] == 0
    assert find_person(redis, Identifier(IdKind.USER, "u-4")) is None


def test_clock_skew_is_corrected(client, redis, config, write_key, drain):
    """A device clock an hour fast: timestamp − (sentAt − receivedAt) lands on server time."""
    fast = datetime.now(UTC) + timedelta(hours=1)
    body = {
        "batch": [
            {
                "type": "track",
                "userId": "u-5",
                "event": "Clicked",
                "messageId": "skew-0001",
                "timestamp": (fast - timedelta(minutes=5)).isoformat(),
            }
        ],
        "sentAt": fast.isoformat(),
    }
    assert client.post("/v1/batch", json=body, auth=(write_key, "")).status_code == 200
    drain()
    row = scan_events(config.events_dir).collect().row(0, named=True)
    skew = row["received_at"] - row["timestamp"]
    assert timedelta(minutes=4, seconds=55) < skew < timedelta(minutes=5, seconds=5)


def test_message_id_dedup_across_requests_and_flushes(client, config, write_key, drain):
    """The same messageId sent twice, before and after a flush, is stored once."""
    msg = {"userId": "u-6", "event": "Signed Up", "messageId": "mid-000042"}
    for _ in range(2):
        client.post("/v1/track", json=msg, auth=(write_key, ""))
    drain()
    client.post("/v1/batch", json={"batch": [{**msg, "type": "track"}]}, auth=(write_key, ""))
    drain()
    assert scan_events(config.events_dir).collect()["event_id"].to_list() == ["mid-000042"]


def test_write_key_in_body_is_accepted(client, write_key, redis):
    """The write key may also travel as writeKey in the body."""
    resp = client.post("/v1/track", json={"writeKey": write_key, "userId": "u", "event": "E"})
    assert resp.status_code == 200 and redis.xlen(keyspace.STREAM) == 1


def _problem(resp, status: int, detail_part: str = "") -> None:
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert body["status"] == status and body["title"]
    assert detail_part in body.get("detail", ""), body


@pytest.mark.parametrize(
    ("path", "body", "detail"),
    [
        ("/v1/track", {"userId": "u", "event": ""}, "track.event"),
        ("/v1/track", {"event": "E"}, "userId or anonymousId"),
        ("/v1/identify", {"userId": {"id": 1}}, "identify.userId"),
        ("/v1/identify", {"userId": "u", "traits": "email=a@b.de"}, "identify.traits"),
        ("/v1/track", {"userId": "u", "event": "E", "timestamp": "yesterday"}, "timestamp"),
        ("/v1/track", {"userId": "u", "event": "E", "context": []}, "track.context"),
        ("/v1/batch", {"batch": {"type": "track"}}, "batch"),
        ("/v1/batch", {"batch": [{"type": "track", "userId": "u", "event": "ok"}, 5]}, "batch[1]"),
        ("/v1/batch", {"batch": [{"type": "explode", "userId": "u"}]}, "batch[0].type"),
        ("/v1/track", {"userId": "u" * 300, "event": "E"}, "at most 256"),
    ],
)
def test_wrong_types_are_400_with_the_field_path(client, redis, write_key, path, body, detail):
    """Wrong types and missing fields answer 400 problem+json naming the path; nothing stored."""
    _problem(client.post(path, json=body, auth=(write_key, "")), 400, detail)
    assert redis.xlen(keyspace.STREAM) == 0


def test_a_bad_message_rejects_its_whole_batch(client, redis, write_key):
    """A batch is stored all together or not at all."""
    batch = [{"type": "track", "userId": "u", "event": "ok"}] * 2 + [{"type": "track"}]
    _problem(client.post("/v1/batch", json={"batch": batch}, auth=(write_key, "")), 400, "batch[2]")
    assert redis.xlen(keyspace.STREAM) == 0


@pytest.mark.parametrize(
    ("data", "headers", "detail"),
    [
        (b"{not json", {}, "not valid JSON"),
        (b"[1, 2]", {}, "JSON object"),
        (b"\xff\xfe\x00", {}, "not valid JSON"),
        (b"not gzip at all", {"Content-Encoding": "gzip"}, "gzip"),
    ],
)
def test_malformed_bodies_are_400(client, redis, write_key, data, headers, detail):
    """Malformed JSON, non-objects and corrupt gzip answer 400 problem+json."""
    resp = client.post(
        "/v1/track",
        data=data,
        headers={"Content-Type": "application/json", **headers},
        auth=(write_key, ""),
    )
    _problem(resp, 400, detail)
    assert redis.xlen(keyspace.STREAM) == 0


def test_size_limits(client, redis, write_key):
    """Over 32 KB per call or event, or 500 KB per batch (also unzipped), is refused."""
    big = {"userId": "u", "event": "E", "properties": {"blob": "x" * 33_000}}
    _problem(client.post("/v1/track", json=big, auth=(write_key, "")), 400, "at most")
    msg = {"type": "track", "userId": "u", "event": "E", "properties": {"blob": "x" * 30_000}}
    huge = {"batch": [msg] * 20}  # 600 KB
    _problem(client.post("/v1/batch", json=huge, auth=(write_key, "")), 400, "at most")
    bomb = gzip.compress(json.dumps({"batch": [msg] * 40}).encode())  # 1.2 MB unzipped
    resp = client.post(
        "/v1/batch", data=bomb, headers={"Content-Encoding": "gzip"}, auth=(write_key, "")
    )
    _problem(resp, 400, "unzipped")
    assert redis.xlen(keyspace.STREAM) == 0


def test_content_length_lies_are_refused(live_url, write_key, redis):
    """A body longer than its declared limit is refused over a real socket."""
    resp = requests.post(
        f"{live_url}/v1/batch",
        data=b"{" + b" " * 600_000 + b"}",
        auth=(write_key, ""),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert resp.status_code in (400, 413)
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert requests.get(f"{live_url}/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize("auth", [("wk_nope", ""), None, ("", "")])
def test_unknown_write_key_is_401(client, redis, auth):
    """Without a known write key the API answers 401 and stores nothing."""
    _problem(client.post("/v1/track", json={"userId": "u", "event": "E"}, auth=auth), 401)
    assert redis.xlen(keyspace.STREAM) == 0


def test_unknown_call_is_404(client, write_key):
    """Only the spec's calls exist."""
    _problem(client.post("/v1/explode", json={}, auth=(write_key, "")), 404)
    _problem(client.get("/v1/track"), 405)
