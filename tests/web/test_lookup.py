"""Partner keys and the per-visitor lookup for ad tools (OpenRTB user.data)."""

from __future__ import annotations

import hashlib
import json

import pytest

from dmp.access import apikeys
from dmp.cli import cli, main
from dmp.membership import definitions, runs
from dmp.people import profiles
from dmp.people.identity import Identifier, IdKind
from dmp.storage import keyspace
from dmp.web import lookup
from tests.factories import apply_segments, bearer, make_hit, make_identify, send_hits

SEGMENTS = """
id: pricing
name: Looked at pricing
iab: ["271", "270"]
where: {did: {event: page, url_contains: /pricing}}
---
id: product
name: Product readers
where: {did: {event: page, url_contains: /produkte}}
---
id: secret
name: Not shared
where: {did: {event: page}}
"""
ANALYTICS_ONLY = {"analytics": True, "ads": False}


@pytest.fixture
def people(redis, drain, config):
    """c-ads: consented to ads, on /pricing and /produkte, identified by the company's
    server, which also holds ads consent for the email; c-noads: no ads."""
    apply_segments(redis, SEGMENTS)
    send_hits(
        redis,
        make_hit(uid="c-ads", url="https://acme.de/pricing"),
        make_hit(uid="c-ads", url="https://acme.de/produkte"),
        make_identify("Jana.Roth@acme.de", uid="c-ads")._replace(consent={"ads": True}),
        make_hit(uid="c-noads", url="https://acme.de/pricing", consent=ANALYTICS_ONLY),
    )
    drain()
    runs.run(redis, config)


@pytest.fixture
def partner(redis, people) -> str:
    return apikeys.create_key(redis, apikeys.Scope.PARTNER, "DSP", ("pricing", "product"))


def _lookup(client, key: str, **params):
    return client.get("/api/v1/lookup", query_string=params, headers=bearer(key))


def test_lookup_answers_openrtb_user_data(client, partner):
    """The shared segments a visitor is in, with IAB ids under segtax 4 where mapped."""
    got = _lookup(client, partner, uid="c-ads")
    assert got.status_code == 200 and got.mimetype == "application/json"
    assert got.headers["Cache-Control"] == "no-store"
    assert got.get_json() == {
        "data": [
            {
                "name": "localhost",
                "segment": [{"id": "pricing"}, {"id": "product"}],
            },
            {"name": "localhost", "segment": [{"id": "270"}, {"id": "271"}], "ext": {"segtax": 4}},
        ]
    }


def test_lookup_by_hashed_email(client, partner):
    """The SHA-256 of the normalised email finds the same person (upper-case hex too)."""
    digest = hashlib.sha256(b"jana.roth@acme.de").hexdigest()
    by_uid = _lookup(client, partner, uid="c-ads").get_json()
    assert _lookup(client, partner, email_sha256=digest).get_json() == by_uid
    assert _lookup(client, partner, email_sha256=digest.upper()).get_json() == by_uid


def test_no_ads_consent_unknown_and_unshared_answer_nothing(client, redis, partner, drain, config):
    """Without the ads consent, unknown, or only in unshared segments: the same empty answer."""
    empty = {"data": []}
    assert _lookup(client, partner, uid="c-noads").get_json() == empty
    assert _lookup(client, partner, uid="nobody").get_json() == empty
    assert _lookup(client, partner, email_sha256="0" * 64).get_json() == empty
    only_secret = apikeys.create_key(redis, apikeys.Scope.PARTNER, "other", ("secret",))
    assert _lookup(client, only_secret, uid="c-noads").get_json() == empty
    assert _lookup(client, only_secret, uid="c-ads").get_json()["data"][0]["segment"] == [
        {"id": "secret"}
    ]
    # A consented person only in segments not shared with the key: nothing either.
    send_hits(redis, make_hit(uid="c-blog", url="https://acme.de/blog"))
    drain()
    runs.run(redis, config)
    assert _lookup(client, only_secret, uid="c-blog").get_json()["data"][0]["segment"] == [
        {"id": "secret"}
    ]
    assert _lookup(client, partner, uid="c-blog").get_json() == empty
    # Withdrawing the ads consent ends the answers at once, before any run.
    send_hits(redis, make_hit(uid="c-ads", consent=ANALYTICS_ONLY))
    drain()
    assert _lookup(client, partner, uid="c-ads").get_json() == empty


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({}, "exactly one of"),
        ({"uid": "a", "email_sha256": "0" * 64}, "exactly one of"),
        ({"uid": ""}, "exactly one of"),  # a blank parameter is no parameter
        ({"uid": "x" * 65}, "dmp_uid cookie"),
        ({"uid": "<script>"}, "dmp_uid cookie"),
        ({"email_sha256": "jana@acme.de"}, "64 hex digits"),
        ({"email_sha256": "g" * 64}, "64 hex digits"),
        # "^…$" took a trailing newline (the OpenAPI document's patterns do not): whole values
        ({"uid": "visitor-1\n"}, "dmp_uid cookie"),
        ({"email_sha256": "0" * 64 + "\n"}, "64 hex digits"),
    ],
)
def test_bad_lookups_are_problems(client, partner, params, detail):
    got = _lookup(client, partner, **params)
    assert got.status_code == 400 and got.mimetype == "application/problem+json"
    assert detail in got.get_json()["detail"]


def test_only_partner_keys_may_look_up(client, redis, people, admin_key):
    """Admin keys, import keys, revoked and made-up keys get 401 problem+json."""
    for key in (admin_key, apikeys.create_key(redis, apikeys.Scope.IMPORT), "dmp_pa_nope", ""):
        got = _lookup(client, key, uid="c-ads")
        assert got.status_code == 401 and got.mimetype == "application/problem+json"
    partner = apikeys.create_key(redis, apikeys.Scope.PARTNER, "x", ("pricing",))
    assert _lookup(client, partner, uid="c-ads").status_code == 200
    apikeys.revoke_key(redis, apikeys.hash_secret(partner)[:12])
    assert _lookup(client, partner, uid="c-ads").status_code == 401


def test_partner_admin_api_is_closed(client, partner):
    """A partner key is not an admin key."""
    got = client.get("/api/v1/funnel", headers=bearer(partner))
    assert got.status_code == 401


def test_cli_creates_partner_keys(runner, redis, people):
    result = runner.invoke(
        cli, ["keys", "create", "--scope", "partner", "--audiences", "pricing,product"]
    )
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    (stored,) = apikeys.list_keys(redis)
    assert stored.key_hash == apikeys.hash_secret(key)
    assert stored.audiences == ("pricing", "product")
    listed = json.loads(runner.invoke(cli, ["keys", "list", "--json"]).output)
    assert listed[0]["audiences"] == ["pricing", "product"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scope", "partner"], "--audiences is needed for a partner key"),
        (["--scope", "admin", "--audiences", "pricing"], "--audiences is needed"),
        (["--scope", "partner", "--audiences", "pricing,nope"], "no segment 'nope'"),
    ],
)
def test_cli_refuses_bad_partner_keys(redis, main_argv, people, capsys, args, message):
    with pytest.raises(SystemExit) as ended:
        main([*main_argv, "keys", "create", *args])
    err = capsys.readouterr().err.strip()
    assert ended.value.code == 2 and len(err.splitlines()) == 1 and message in err
    assert not [k for k in apikeys.list_keys(redis) if k.scope is apikeys.Scope.PARTNER]


def test_lookup_other_methods_and_too_many_parameters(client, partner):
    """POST is 405 problem+json; a query of hundreds of parameters is a 400."""
    got = client.post("/api/v1/lookup?uid=c-ads", headers=bearer(partner))
    assert got.status_code == 405 and got.mimetype == "application/problem+json"
    many = "&".join(f"x{i}=1" for i in range(200)) + "&uid=c-ads"
    got = client.get(f"/api/v1/lookup?{many}", headers=bearer(partner))
    assert got.status_code == 400 and "query parameters" in got.get_json()["detail"]


def test_lookup_follows_merges(client, redis, drain, config, partner):
    """A cookie whose person was merged into another answers for the surviving person."""
    send_hits(redis, make_hit(uid="c-other", url="https://acme.de/blog"))
    drain()
    before = profiles.find_person(redis, Identifier(IdKind.UID, "c-other"))
    send_hits(redis, make_identify("jana.roth@acme.de", uid="c-other"))
    drain()
    stored = redis.hget(keyspace.person(before), "merged_into")
    assert stored, "the second cookie's person was merged"
    assert (
        _lookup(client, partner, uid="c-other").get_json()
        == _lookup(client, partner, uid="c-ads").get_json()
    )


def test_a_deleted_segment_is_no_longer_shared(client, redis, partner):
    """Deleting a segment takes it out of partner keys: made again, it is not shared."""
    definitions.delete_segment(redis, "pricing")
    (stored,) = [k for k in apikeys.list_keys(redis) if k.scope is apikeys.Scope.PARTNER]
    assert stored.audiences == ("product",)
    apply_segments(redis, SEGMENTS.split("---")[0])
    answer = _lookup(client, partner, uid="c-ads").get_json()
    assert answer["data"][0]["segment"] == [{"id": "product"}] and len(answer["data"]) == 1


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("t.acme.de", "t.acme.de"),
        ("t.acme.de:8000", "t.acme.de"),
        ("[::1]", "[::1]"),
        ("[::1]:8000", "[::1]"),
        ("", ""),
    ],
)
def test_the_provider_is_the_request_hosts_name(host, name):
    """Without DMP_PROVIDER_DOMAIN the provider is the Host without its port (IPv6 too)."""
    assert lookup.host_name(host) == name
