"""The admin API: person lookups behind an admin key, errors as problem+json."""

from __future__ import annotations

import pytest

from dmp.access.apikeys import revoke_key
from tests.factories import NOW, bearer, make_hit, make_identify, read_metric, scrape, send_hits


@pytest.fixture
def anna(redis, drain) -> str:
    """Return the person id of a medium person with two page views."""
    pages = [
        make_hit(uid="c1", url=f"https://acme.de/p{i}", timestamp=NOW + 1000 * (i + 1))
        for i in range(2)
    ]
    send_hits(redis, make_identify("anna@acme.de", uid="c1", firstName="Anna"), *pages)
    drain()
    from dmp.people.identity import Identifier, IdKind
    from dmp.people.profiles import find_person

    return find_person(redis, Identifier(IdKind.EMAIL, "anna@acme.de"))


def test_person_by_id_has_the_contract_fields(client, admin_key, anna):
    """GET /api/v1/persons/<id> answers the documented fields, touchpoints newest first."""
    resp = client.get(f"/api/v1/persons/{anna}", headers=bearer(admin_key))
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    body = resp.get_json()
    for name in (
        "person_id",
        "tier",
        "identifiers",
        "traits",
        "consents",
        "first_seen",
        "last_seen",
        "touchpoints",
    ):
        assert name in body
    assert body["tier"] == "medium" and body["traits"]["firstName"] == "Anna"
    times = [t["timestamp"] for t in body["touchpoints"]]
    assert times == sorted(times, reverse=True)
    assert body["touchpoints"][0]["url"] == "https://acme.de/p1"


@pytest.mark.parametrize("query", ["email=Anna@ACME.de", "email=%20anna@acme.de", "uid=c1"])
def test_person_by_email_or_cookie(client, admin_key, anna, query):
    """?email= (normalised) and ?uid= find the same person."""
    resp = client.get(f"/api/v1/persons?{query}", headers=bearer(admin_key))
    assert resp.status_code == 200 and resp.get_json()["person_id"] == anna


def test_limit_bounds_the_timeline(client, admin_key, anna):
    """?limit= returns only that many touchpoints."""
    resp = client.get(f"/api/v1/persons/{anna}?limit=1", headers=bearer(admin_key))
    assert len(resp.get_json()["touchpoints"]) == 1
    assert resp.get_json()["touchpoints_total"] >= 3


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer " + "x" * 5000},
    ],
)
def test_missing_or_wrong_key_is_401(client, anna, headers):
    """Without a valid admin key the API answers 401 problem+json."""
    resp = client.get(f"/api/v1/persons/{anna}", headers=headers)
    assert resp.status_code == 401 and resp.mimetype == "application/problem+json"
    assert resp.get_json()["status"] == 401


def test_revoked_key_is_401(client, redis, admin_key, anna):
    """A revoked key stops working at once."""
    from dmp.access.apikeys import hash_secret

    assert revoke_key(redis, hash_secret(admin_key)[:12]) == 1
    assert client.get(f"/api/v1/persons/{anna}", headers=bearer(admin_key)).status_code == 401


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/persons/NOT-AN-ID", 400),
        ("/api/v1/persons/0123456789abcdef", 404),
        ("/api/v1/persons/0123456789abcdef%0A", 400),  # "^…$" took a trailing newline
        ("/api/v1/persons", 400),
        ("/api/v1/persons?email=a@b.de&uid=x", 400),
        ("/api/v1/persons?email=not-an-email", 400),
        ("/api/v1/persons?email=nobody@acme.de", 404),
        ("/api/v1/persons?uid=" + "u" * 100, 400),
        ("/api/v1/persons?uid=c1&limit=0", 400),
        ("/api/v1/persons?uid=c1&limit=abc", 400),
        ("/api/v1/nothing-here", 404),
    ],
)
def test_bad_requests_get_problem_json(client, admin_key, anna, path, status):
    """Bad ids, bad parameters and unknown persons answer problem+json with a detail."""
    resp = client.get(path, headers=bearer(admin_key))
    assert resp.status_code == status and resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert body["status"] == status and body["title"] and body["type"].startswith("https://")


def test_healthz_and_metrics(client, redis, anna):
    """/healthz answers ok; /metrics speaks Prometheus text with ingest gauges."""
    assert client.get("/healthz").get_json() == {"status": "ok"}
    text = scrape(client)
    assert "# TYPE dmp_stream_pending gauge" in text
    assert read_metric(text, "dmp_persons", tier="medium") == 1
    assert read_metric(text, "dmp_events_stored") == 3


def test_sales_sets_a_stage_and_the_person_shows_it(client, admin_key, anna, redis):
    """POST …/stage records a stage (201); the person's view lists it with its time."""
    auth = bearer(admin_key)
    resp = client.post(
        f"/api/v1/persons/{anna}/stage", json={"stage": "sal", "by": "jana@acme.de"}, headers=auth
    )
    assert resp.status_code == 201, resp.get_data(as_text=True)
    record = resp.get_json()
    assert record["person_id"] == anna and record["stage"] == "sal" and record["source"] == "api"
    person = client.get(f"/api/v1/persons/{anna}", headers=auth).get_json()
    assert [(s["stage"], s["by"]) for s in person["stages"]] == [("sal", "jana@acme.de")]
    assert person["matrix"] is None  # no build yet


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"stage": "hot"}, 400, "stage must be one of"),
        ({}, 400, "stage must be one of"),
        ({"stage": ["sal"]}, 400, "stage must be one of"),
        ({"stage": "sal", "by": 5}, 400, "by must be a string"),
        ([1, 2], 400, "send a JSON object"),
        ("not json", 400, "send a JSON object"),
        ({"stage": "sal", "pad": "x" * 5000}, 413, "small JSON object"),
    ],
)
def test_bad_stage_changes_are_problems(client, admin_key, anna, redis, body, status, detail):
    """Wrong stage changes get a problem+json 4xx and record nothing."""
    auth = bearer(admin_key)
    url = f"/api/v1/persons/{anna}/stage"
    if isinstance(body, str):
        resp = client.post(url, data=body, headers={**auth, "Content-Type": "application/json"})
    else:
        resp = client.post(url, json=body, headers=auth)
    assert resp.status_code == status and resp.mimetype == "application/problem+json"
    assert detail in resp.get_json()["detail"]
    assert redis.llen(f"dmp:person:{{{anna}}}:stages") == 0


def test_stage_of_unknown_person_is_404_and_needs_a_key(client, admin_key):
    """An unknown person is 404; no key is 401."""
    url = "/api/v1/persons/0123456789abcdef/stage"
    auth = bearer(admin_key)
    assert client.post(url, json={"stage": "sal"}, headers=auth).status_code == 404
    assert client.post(url, json={"stage": "sal"}).status_code == 401
