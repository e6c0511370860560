"""CRM and newsletter imports: mapping, identity, tiers, stages, bad rows, idempotence."""

from __future__ import annotations

import json

import polars as pl
import pytest

from dmp.cli import cli, main
from dmp.ingest.eventlog import scan_events
from dmp.ingest.worker import status
from dmp.people.identity import IdKind
from dmp.storage import keyspace
from tests.factories import bearer, consent_of, make_identify, person_of, send_hits

CRM_CSV = """E-Mail;Telefon;Kundennummer;Firma;Position;Mitarbeiter;Land;Straße;PLZ;Ort;Lifecycle Stage;Deal;Updated
anna@acme.de;030 1234567;C-1;Acme GmbH;Head of Marketing;1.200;DE;Hauptstr. 1;10115;Berlin;SQL;12.500,00;2026-09-01T10:00:00Z
bob@beta.de;;C-2;Beta AG;CTO;80;AT;;;;lead;;2026-09-02
not-an-email;;C-3;;;;;;;;;;
;;;;;;;;;;;;
carl@gamma.de;;C-4;Gamma;;many;DE;;;;;;
dora@delta.de;;C-5;Delta;;;DE;;;;hot;;
"""  # noqa: E501  (a CRM export is one long line per record)
NEWSLETTER_CSV = """email,event,time,campaign,topic,url
anna@acme.de,sent,2026-09-10T08:00:00Z,Sept,crm,
anna@acme.de,open,2026-09-10T09:00:00Z,Sept,crm,
anna@acme.de,click,2026-09-10T09:01:00Z,Sept,crm,https://acme.de/crm-guide
eve@epsilon.de,bounce,2026-09-10T08:00:01Z,Sept,,
bob@beta.de,unsubscribe,1757500000,Sept,,
bob@beta.de,opened-ish,2026-09-10T08:00:00Z,Sept,,
bob@beta.de,open,tomorrow,Sept,,
"""


@pytest.fixture
def files(tmp_path):
    (tmp_path / "crm.csv").write_text(CRM_CSV, encoding="utf-8")
    (tmp_path / "nl.csv").write_text(NEWSLETTER_CSV, encoding="utf-8")
    return tmp_path


def test_crm_import_maps_columns_promotes_and_records_stages(runner, redis, files):
    """German headers map by name; a CRM record makes an emailed person high; stages land."""
    send_hits(redis, make_identify("anna@acme.de", uid="c-anna"))  # known from the website already
    result = runner.invoke(cli, ["import", "crm", str(files / "crm.csv"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert (report["rows"], report["imported"], report["already_imported"]) == (6, 2, 0)
    assert [(b["row"], b["reason"]) for b in report["bad"]] == [
        (4, "email: 'not-an-email' is not an email address"),
        (5, "no email, crm_id or phone to find the person by"),
        (6, "employees: 'many' is not a whole number"),
        (7, "stage: 'hot' is not a stage (lead, mql, sal, sql, won, lost, recycled)"),
    ]
    assert report["stages_recorded"] == 2
    anna = person_of(redis, IdKind.EMAIL, "anna@acme.de")
    assert anna["tier"] == "high" and anna["identifiers"]["uid"] == ["c-anna"]
    assert anna["identifiers"]["crm"] == ["C-1"] and anna["identifiers"]["phone"] == [
        "+49301234567"
    ]
    assert anna["traits"]["employees"] == 1200 and anna["traits"]["deal_value"] == 12500.0
    assert anna["traits"]["address"] == {
        "street": "Hauptstr. 1",
        "postal_code": "10115",
        "city": "Berlin",
    }
    stages = redis.lrange(f"dmp:person:{{{anna['person_id']}}}:stages", 0, -1)
    assert [json.loads(s)["stage"] for s in stages] == ["sql"]
    assert person_of(redis, IdKind.EMAIL, "bob@beta.de")["tier"] == "high"  # email + CRM record


def test_importing_the_same_file_twice_adds_nothing(runner, redis, files, config):
    """The second import finds every row imported already: no events, no stage records."""
    assert runner.invoke(cli, ["import", "crm", str(files / "crm.csv")]).exit_code == 0
    before = status(redis)["events_stored"]
    again = runner.invoke(cli, ["import", "crm", str(files / "crm.csv"), "--json"])
    report = json.loads(again.output[again.output.index("{") :])
    assert report["imported"] == 0 and report["already_imported"] == 2
    assert report["stages_recorded"] == 0
    assert status(redis)["events_stored"] == before == 2
    assert scan_events(config.events_dir).select(pl.len()).collect().item() == 2


def test_newsletter_import_consents_bounces_and_unsubscribes(runner, redis, files, config):
    """Opens and clicks are email touchpoints; unsubscribe withdraws consent; bounce marks."""
    result = runner.invoke(cli, ["import", "newsletter", str(files / "nl.csv")])
    assert result.exit_code == 0, result.output
    assert "7 rows: 5 ingested, 0 already imported, 2 bad" in result.output
    assert "row 7: event: 'opened-ish' is not one of" in result.output
    assert "row 8: time: 'tomorrow' is not an ISO time" in result.output
    anna = person_of(redis, IdKind.EMAIL, "anna@acme.de")
    assert anna["tier"] == "medium" and consent_of(anna, "email")["granted"] is True
    assert {t["event"] for t in anna["touchpoints"]} == {"sent", "open", "click", "tier_promoted"}
    assert consent_of(person_of(redis, IdKind.EMAIL, "bob@beta.de"), "email")["granted"] is False
    assert person_of(redis, IdKind.EMAIL, "eve@epsilon.de")["traits"]["email_status"] == "bounced"
    log = scan_events(config.events_dir).collect()
    assert set(log["channel"]) == {"email"} and set(log["source"]) == {"newsletter"}
    click = log.filter(pl.col("event") == "click").row(0, named=True)
    assert click["url"] == "https://acme.de/crm-guide" and click["topics"] == ["crm"]


def test_a_mapping_names_columns_the_headers_do_not(runner, redis, tmp_path):
    """--map FIELD=COLUMN picks a column whose name means nothing to dmp."""
    path = tmp_path / "odd.csv"
    path.write_text("Kontakt,Aktion,Wann\nzoe@zeta.de,click,2026-09-10T08:00:00Z\n")
    args = ["import", "newsletter", str(path), "--map", "email=Kontakt", "--map", "event=Aktion"]
    result = runner.invoke(cli, [*args, "--map", "time=Wann"])
    assert result.exit_code == 0, result.output
    touchpoints = person_of(redis, IdKind.EMAIL, "zoe@zeta.de")["touchpoints"]
    assert "click" in {t["event"] for t in touchpoints}


def test_parquet_files_import_too(runner, redis, tmp_path):
    """A Parquet table imports like a CSV (values read as text)."""
    path = tmp_path / "crm.parquet"
    pl.DataFrame({"email": ["pia@pi.de"], "crm_id": [42], "employees": [300]}).write_parquet(path)
    assert runner.invoke(cli, ["import", "crm", str(path)]).exit_code == 0
    pia = person_of(redis, IdKind.EMAIL, "pia@pi.de")
    assert pia["identifiers"]["crm"] == ["42"] and pia["traits"]["employees"] == 300


def test_parquet_whole_floats_read_as_whole_numbers(runner, redis, tmp_path):
    """A float column of whole numbers (pandas' habit with gaps) reads 300.0 as 300, not 3000."""
    path = tmp_path / "crm.parquet"
    frame = {
        "email": ["pia@pi.de", "ole@pi.de"],
        "crm_id": [42.0, 43.0],
        "employees": [300.0, None],
    }
    pl.DataFrame(frame).write_parquet(path)
    assert runner.invoke(cli, ["import", "crm", str(path)]).exit_code == 0
    pia = person_of(redis, IdKind.EMAIL, "pia@pi.de")
    assert pia["identifiers"]["crm"] == ["42"] and pia["traits"]["employees"] == 300


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        (None, [], "cannot read"),
        ("a,b\n1,2\n", [], "no column for 'email'"),
        ("email,event\nx@y.de,open\n", [], "no column for 'time'"),
        ("email,event,time\n", ["--map", "when=time"], "unknown field 'when'"),
        ("email,event,time\n", ["--map", "email"], "expected FIELD=COLUMN"),
        ("email,event,time\n", ["--map", "email=Mail"], "names column 'Mail'"),
        ("email,event,time\nx,open,1\n", [], "none of its 1 rows can be imported"),
        (b"\xff\xfe\x00garbage", [], "cannot read"),
    ],
)
def test_bad_files_exit_2_with_one_line(redis, config, tmp_path, capsys, content, args, message):
    """A file that cannot be imported ends with exit code 2 and one clear line."""
    path = tmp_path / "in.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(SystemExit) as ended:
        main(["--data-dir", str(config.data_dir), "import", "newsletter", str(path), *args])
    err = capsys.readouterr().err.strip()
    assert ended.value.code == 2 and message in err and len(err.splitlines()) == 1
    assert redis.xlen(keyspace.partition(0).stream) == 0


EVENTS = [
    {"email": "Anna@Acme.de", "event": "open", "time": "2026-09-10T09:00:00Z", "campaign": "Sept"},
    {"email": "anna@acme.de", "event": "click", "time": 1757494860, "url": "https://acme.de/x"},
]


def test_webhook_takes_events_once(client, redis, drain, import_key):
    """Events posted to the webhook are ingested like imported ones; a resend is a duplicate."""
    auth = bearer(import_key)
    resp = client.post("/hooks/newsletter", json={"events": EVENTS}, headers=auth)
    assert resp.status_code == 202 and resp.get_json() == {
        "accepted": 2,
        "duplicates": 0,
        "erased_before": 0,
    }
    again = client.post(f"/hooks/newsletter?key={import_key}", json=EVENTS[0])
    assert again.status_code == 202 and again.get_json() == {
        "accepted": 0,
        "duplicates": 1,
        "erased_before": 0,
    }
    drain()
    events = {t["event"] for t in person_of(redis, IdKind.EMAIL, "anna@acme.de")["touchpoints"]}
    assert {"open", "click"} <= events


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"events": [EVENTS[0], {"email": "x", "event": "open", "time": "1"}]}, 400, "1 of 2"),
        ({"events": [{"email": "a@b.de", "event": "spam", "time": "1757494860"}]}, 400, "1 of 1"),
        ({"events": []}, 400, "non-empty list"),
        ({"events": "open"}, 400, "non-empty list"),
        ({"events": [1]}, 400, "1 of 1"),
        ({"email": ["a@b.de"], "event": "open", "time": "1"}, 400, "strings or numbers"),
        ({"events": [EVENTS[0]] * 1001}, 400, "at most 1000"),
        ("{not json", 400, "not valid JSON"),
        ("x" * 600_000, 400, "may be at most"),
    ],
)
def test_webhook_refuses_bad_calls_whole(client, redis, import_key, body, status, detail):
    """A call with any bad event stores nothing and says which events and why."""
    auth = bearer(import_key)
    if isinstance(body, str):
        kwargs = {"data": body, "content_type": "application/json"}
    else:
        kwargs = {"json": body}
    resp = client.post("/hooks/newsletter", headers=auth, **kwargs)
    assert resp.status_code == status and resp.mimetype == "application/problem+json"
    assert detail in resp.get_json().get("detail", "")
    assert redis.xlen(keyspace.partition(0).stream) == 0


def test_webhook_needs_an_import_key(client, admin_key):
    """No key or a wrong one is 401; an admin key works too."""
    assert client.post("/hooks/newsletter", json=EVENTS[0]).status_code == 401
    bad = client.post("/hooks/newsletter?key=dmp_im_nope", json=EVENTS[0])
    assert bad.status_code == 401 and bad.mimetype == "application/problem+json"
    auth = bearer(admin_key)
    assert client.post("/hooks/newsletter", json=EVENTS[0], headers=auth).status_code == 202


def test_webhook_problem_lists_the_bad_events(client, import_key):
    """The 400 names each bad event by its index and reason."""
    bad = {"email": "nobody", "event": "open", "time": "1757494860"}
    resp = client.post(
        "/hooks/newsletter",
        json={"events": [EVENTS[0], bad]},
        headers=bearer(import_key),
    )
    assert resp.get_json()["errors"] == [
        {"index": 1, "reason": "email: 'nobody' is not an email address"}
    ]


def test_a_mapping_file_names_columns_and_map_wins(runner, redis, tmp_path):
    """--mapping FILE (YAML) names columns; a --map pair overrides one of its entries."""
    path = tmp_path / "odd.csv"
    path.write_text("Kontakt,Aktion,Wann,Wann2\nzoe@zeta.de,click,2026-09-10T08:00:00Z,x\n")
    mapping = tmp_path / "map.yaml"
    mapping.write_text("email: Kontakt\nevent: Aktion\ntime: Wann2\n")
    args = ["import", "newsletter", str(path), "--mapping", str(mapping), "--map", "time=Wann"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    touchpoints = person_of(redis, IdKind.EMAIL, "zoe@zeta.de")["touchpoints"]
    assert "click" in {t["event"] for t in touchpoints}


@pytest.mark.parametrize(
    ("content", "message"), [("- a\n- b\n", "expected FIELD: COLUMN"), ("a: [", "cannot read it")]
)
def test_a_bad_mapping_file_exits_2(redis, config, tmp_path, capsys, content, message):
    """A mapping file that is not FIELD: COLUMN pairs is refused in one line."""
    (tmp_path / "in.csv").write_text("email,event,time\n")
    (tmp_path / "m.yaml").write_text(content)
    args = ["import", "newsletter", str(tmp_path / "in.csv"), "--mapping", str(tmp_path / "m.yaml")]
    with pytest.raises(SystemExit) as ended:
        main(["--data-dir", str(config.data_dir), *args])
    err = capsys.readouterr().err.strip()
    assert ended.value.code == 2 and message in err and len(err.splitlines()) == 1


def test_a_stage_already_recorded_is_not_recorded_again(runner, redis, tmp_path):
    """A changed CRM row with the same stage adds a touchpoint but no stage record."""
    first = tmp_path / "a.csv"
    first.write_text("email,crm_id,company,stage\nanna@acme.de,C-1,Acme,sql\nbob@b.de,C-2,B,lead\n")
    assert runner.invoke(cli, ["import", "crm", str(first)]).exit_code == 0
    second = tmp_path / "b.csv"
    second.write_text(
        "email,crm_id,company,stage\nanna@acme.de,C-1,Acme AG,sql\nbob@b.de,C-2,B,won\n"
    )
    report = runner.invoke(cli, ["import", "crm", str(second), "--json"]).output
    assert json.loads(report[report.index("{") :])["stages_recorded"] == 1
    anna = person_of(redis, IdKind.EMAIL, "anna@acme.de")["person_id"]
    assert [
        json.loads(s)["stage"] for s in redis.lrange(f"dmp:person:{{{anna}}}:stages", 0, -1)
    ] == ["sql"]
    bob = person_of(redis, IdKind.EMAIL, "bob@b.de")["person_id"]
    assert [
        json.loads(s)["stage"] for s in redis.lrange(f"dmp:person:{{{bob}}}:stages", 0, -1)
    ] == ["lead", "won"]
    assert {anna, bob} <= redis.smembers(keyspace.MATRIX_TOUCHED)
