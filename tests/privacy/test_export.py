"""A person's access export (GDPR Art. 15): one JSON document with everything dmp holds
about them, through the admin API and `dmp persons export`."""

from __future__ import annotations

import json

import pytest

from dmp.cli import main
from dmp.membership import runs
from dmp.people import lifecycle
from dmp.people.identity import IdKind
from dmp.privacy.export import FORMAT, export_person
from dmp.records import Stage
from dmp.storage import keyspace
from tests.factories import (
    GOOGLEBOT,
    NOW,
    apply_segments,
    bearer,
    consent_of,
    make_hit,
    make_identify,
    person_of,
    send_hits,
)

SEGMENT = "id: crm-readers\nname: CRM readers\nwhere: {did: {event: page, topic: crm}}\n"


@pytest.fixture
def anna(redis, config, drain) -> str:
    """Anna: two browsers (two cookies, merged by her email), a page view on each, a
    stage from sales, a matrix build and a segment run. Returns her person id."""
    send_hits(redis, make_hit(uid="cookie-a", url="https://acme.de/crm"))
    send_hits(redis, make_hit(uid="cookie-b", timestamp=NOW + 1000, url="https://acme.de/erp"))
    drain()
    send_hits(redis, make_identify("anna@acme.de", uid="cookie-a", firstName="Anna"))
    send_hits(redis, make_identify("anna@acme.de", uid="cookie-b"))
    drain()
    apply_segments(redis, SEGMENT)
    runs.run(redis, config)
    pid = person_of(redis, IdKind.EMAIL, "anna@acme.de")["person_id"]
    # 2026-09-21T14:13:21.234Z
    lifecycle.record_stage(
        redis, pid, Stage.SAL, source="api", by="jana@acme.de", at_ms=1790000001234
    )
    return pid


def test_the_export_holds_everything_about_the_person(redis, config, anna) -> None:
    """Identifiers, traits, consents with proof, the merged-away person, score, segments
    with their history, and every event of both browsers from the event log."""
    found = export_person(redis, config, anna)
    assert found["format"] == FORMAT and found["person_id"] == anna
    assert found["identifiers"]["email"] == ["anna@acme.de"]
    assert sorted(found["identifiers"]["uid"]) == ["cookie-a", "cookie-b"]
    assert found["traits"]["firstName"] == "Anna"
    ads = consent_of(found, "ads", "uid:cookie-a")
    assert ads["granted"] is True and ads["source"] == "pixel" and ads["identifier"]
    assert consent_of(found, "ads", "uid:cookie-b")["granted"] is True
    assert {c["identifier"] for c in found["consent_history"]} == {"uid:cookie-a", "uid:cookie-b"}
    assert len(found["merged_from"]) == 1
    urls = [e["url"] for e in found["timeline"] if e["type"] == "page"]
    assert urls == ["https://acme.de/crm", "https://acme.de/erp"]  # both browsers, in order
    assert {e["person_id"] for e in found["timeline"]} == {anna, *found["merged_from"]}
    assert found["score"]["person_id"] == anna and found["score"]["score_breakdown"]
    assert found["segments"] == ["crm-readers"]
    assert [c["change"] for c in found["segment_history"]] == ["entered"]
    assert found["destinations"] == []
    assert found["stages"] == [  # times a person reads are ISO 8601, as everywhere
        {"stage": "sal", "at": "2026-09-21T14:13:21.234Z", "source": "api", "by": "jana@acme.de"}
    ]
    json.dumps(found)  # one JSON document, nothing that needs a custom encoder


def test_a_merged_id_exports_the_person_it_became(redis, config, anna) -> None:
    """Asked by the id of the merged-away browser, the export is the surviving person's."""
    merged = export_person(redis, config, anna)["merged_from"][0]
    assert export_person(redis, config, merged)["person_id"] == anna


def test_the_admin_api_answers_the_export(client, admin_key, anna) -> None:
    """GET /api/v1/persons/<id>/export: the document, private; 404 and 400 as problems."""
    res = client.get(f"/api/v1/persons/{anna}/export", headers=bearer(admin_key))
    assert res.status_code == 200 and res.get_json()["person_id"] == anna
    assert res.headers["Cache-Control"] == "no-store"
    missing = client.get("/api/v1/persons/0123456789abcdef/export", headers=bearer(admin_key))
    assert missing.status_code == 404 and missing.mimetype == "application/problem+json"
    bad = client.get("/api/v1/persons/NOT-AN-ID/export", headers=bearer(admin_key))
    assert bad.status_code == 400


def test_the_cli_exports_by_id_email_or_cookie(anna, main_argv, capsys, tmp_path) -> None:
    """`dmp persons export` finds the person by id, --email or --uid; -o writes a file."""
    main([*main_argv, "persons", "export", "--email", "Anna@ACME.de"])
    assert json.loads(capsys.readouterr().out)["person_id"] == anna
    main([*main_argv, "persons", "export", "--uid", "cookie-b", "-o", str(tmp_path / "a.json")])
    assert json.loads((tmp_path / "a.json").read_text())["person_id"] == anna


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--email", "nobody@acme.de"], "no person with email nobody@acme.de"),
        (["--email", "not an email"], "not an email address"),
        ([], "give exactly one of PERSON_ID, --email or --uid"),
        (["0123456789abcdef", "--uid", "x"], "give exactly one"),
        (["0123456789abcdef"], "no person 0123456789abcdef"),
    ],
)
def test_the_cli_refuses_what_finds_nobody(redis, main_argv, capsys, args, says) -> None:
    """Nobody found, or not one way to find them: exit 2 and one line."""
    with pytest.raises(SystemExit) as exited:
        main([*main_argv, "persons", "export", *args])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1 and says in err


def test_merged_ids_are_found_without_the_merge_log(redis, config, anna) -> None:
    """The merge log is capped; the person's own record of ids merged into them is not."""
    merged = export_person(redis, config, anna)["merged_from"]
    redis.delete(keyspace.MERGES)
    assert export_person(redis, config, anna)["merged_from"] == merged


def test_hits_of_their_cookie_stored_without_a_person_are_theirs(
    redis, config, drain, anna
) -> None:
    """A hit of their cookie that was stored without a person (its agent looked like a
    bot) is held about them too: the export has it."""
    send_hits(redis, make_hit(uid="cookie-a", user_agent=GOOGLEBOT, url="https://acme.de/b"))
    drain()
    urls = [e["url"] for e in export_person(redis, config, anna)["timeline"]]
    assert "https://acme.de/b" in urls
