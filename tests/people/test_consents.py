"""Consent per identifier: the API's proof, and the move from per-person consents."""

from __future__ import annotations

import json

from dmp.people.identity import IdKind
from dmp.storage import keyspace
from tests.factories import NOW, bearer, consent_of, make_hit, person_of, send_hits


def test_person_level_consents_move_to_their_identifiers(redis, drain):
    """A profile written before consent was per identifier (``c:<category>`` proofs and a
    ``cs`` summary) is migrated once: a browser's proof to the cookie, another's to the email."""
    pid = "00000000000000aa"
    redis.hset(
        keyspace.person(pid),
        mapping={
            "tier": "medium",
            "email": "old@acme.de",
            "c:ads": json.dumps({"granted": True, "at": NOW, "source": "pixel", "site": "s"}),
            "c:email": json.dumps({"granted": True, "at": NOW, "source": "newsletter"}),
            "cs": "ads=1,email=1",
        },
    )
    redis.sadd(keyspace.person(pid, "identifiers"), "uid:c-old", "email:old@acme.de")
    redis.set(keyspace.identifier("email", "old@acme.de"), pid)
    redis.delete(keyspace.MIGRATED_CONSENTS)
    send_hits(redis, make_hit(uid="someone-else"))
    drain()
    person = person_of(redis, IdKind.EMAIL, "old@acme.de")
    assert consent_of(person, "ads", "uid:c-old")["granted"] is True
    assert consent_of(person, "email", "email:old@acme.de")["source"] == "newsletter"
    assert consent_of(person, "ads", "email:old@acme.de") is None
    assert not redis.hexists(keyspace.person(pid), "cs")
    assert redis.exists(keyspace.MIGRATED_CONSENTS)


def test_the_consents_endpoint_shows_current_states_and_history(client, redis, admin_key, drain):
    """GET /api/v1/persons/<id>/consents: per category each identifier's state with the
    proof that set it, and every change in order."""
    send_hits(redis, make_hit(uid="c1", consent={"analytics": True, "ads": True}))
    send_hits(
        redis, make_hit(uid="c1", timestamp=NOW + 1000, consent={"analytics": True, "ads": False})
    )
    drain()
    pid = person_of(redis, IdKind.UID, "c1")["person_id"]
    resp = client.get(f"/api/v1/persons/{pid}/consents", headers=bearer(admin_key))
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    body = resp.get_json()
    (ads,) = body["current"]["ads"]
    assert ads["identifier"] == "uid:c1" and ads["granted"] is False
    assert [h["granted"] for h in body["history"] if h["category"] == "ads"] == [True, False]
    assert all(h["source"] == "pixel" and h["trusted"] is False for h in body["history"])
    missing = client.get("/api/v1/persons/ffffffffffffffff/consents", headers=bearer(admin_key))
    assert missing.status_code == 404 and missing.mimetype == "application/problem+json"


def test_the_proof_keeps_text_version_tc_string_hash_and_double_opt_in(
    client, runner, redis, write_key, drain, tmp_path
):
    """The pixel's cv= is the consent text's version; a TC string is kept as its CMP's id
    and its hash; a newsletter file's double opt-in column goes into the email consent's proof."""
    from dmp.cli import cli

    client.get("/p.gif", query_string={"k": write_key, "consent": "analytics,ads", "cv": "2026-03"})
    uid_a = client.get_cookie("dmp_uid").value
    client.delete_cookie("dmp_uid")
    tc = "CQhDnIAQhDnIAEsACBENB-EAAICAAAAAAAYgACFAAAAA.P__wBoAAgBRAGQBjwF5gXcOpg__8"  # 1, 9
    client.get("/p.gif", query_string={"k": write_key, "gdpr": "1", "gdpr_consent": tc})
    uid_b = client.get_cookie("dmp_uid").value
    nl = tmp_path / "nl.csv"
    nl.write_text("email;event;time;double_opt_in\nd@acme.de;anmeldung;2026-09-01T10:00:00Z;ja\n")
    assert runner.invoke(cli, ["import", "newsletter", str(nl)]).exit_code == 0
    drain()
    a = person_of(redis, IdKind.UID, uid_a)
    assert consent_of(a, "ads", f"uid:{uid_a}")["version"] == "2026-03"
    b = consent_of(person_of(redis, IdKind.UID, uid_b), "analytics", f"uid:{uid_b}")
    assert b["version"].startswith("tcf:300:") and tc not in json.dumps(b)
    d = consent_of(person_of(redis, IdKind.EMAIL, "d@acme.de"), "email", "email:d@acme.de")
    assert d["double_opt_in"] is True and d["source"] == "newsletter" and d["trusted"] is True
