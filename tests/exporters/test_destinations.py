"""Destinations through the CLI and the admin API: settings, secrets, runs, bad input."""

from __future__ import annotations

import json

import pytest

from dmp.cli import main
from dmp.storage import keyspace
from exporters import settings
from tests.exporters.test_sync import SEGMENT, ingest_and_run, person
from tests.factories import apply_segments, bearer


def run_cli(capsys, monkeypatch, config, *args: str) -> tuple[int, str, str]:
    """Run ``dmp`` as a user does; return exit code, stdout and stderr."""
    monkeypatch.setenv("DMP_REDIS_URL", config.redis_url)
    monkeypatch.setenv("DMP_DATA_DIR", str(config.data_dir))
    code = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_adds_runs_and_reports_a_file_destination(redis, config, tmp_path, capsys, monkeypatch):
    """`dmp destinations add file`, `dmp export run` and `dmp export status --json`."""
    apply_segments(redis, SEGMENT)
    ingest_and_run(redis, config, person("a@x.de"), person("b@x.de", ads=False))
    folder = tmp_path / "out"
    code, out, err = run_cli(
        capsys, monkeypatch, config,
        "destinations", "add", "file", "--name", "drop", "--segments", "known",
        "--every", "1h", "--option", f"folder={folder}", "--option", "format=ndjson",
    )  # fmt: skip
    assert code == 0, err
    assert "destination drop (file) for known, every 60 min" in out
    code, out, err = run_cli(capsys, monkeypatch, config, "export", "run", "drop", "--dry-run")
    assert code == 0 and "would add 1" in out and "a@x.de" in out
    assert not folder.exists()
    code, out, err = run_cli(capsys, monkeypatch, config, "export", "run", "drop")
    assert code == 0, err
    assert "export drop/known: ok; added 1, removed 0" in out
    assert "1 refused" in out  # b@x.de refused ads: counted, not sent
    latest = (folder / "known" / "LATEST").read_text().strip()
    rows = [json.loads(line) for line in (folder / "known" / latest).read_text().splitlines()]
    assert [r["email"] for r in rows] == ["a@x.de"]
    code, out, err = run_cli(capsys, monkeypatch, config, "export", "status", "--json")
    status = json.loads(out)
    assert status["drop"][0]["segments"][0]["added"] == 1
    code, out, err = run_cli(capsys, monkeypatch, config, "destinations", "list", "--json")
    assert json.loads(out)[0]["options"]["format"] == "ndjson"


def test_cli_refuses_bad_input_with_one_line(redis, config, tmp_path, capsys, monkeypatch):
    """Bad kinds, secrets in options, unknown segments and names exit 2 with one line."""
    apply_segments(redis, SEGMENT)
    cases = [
        ("add", "nope", "--name", "x", "--segments", "known"),
        ("add", "file", "--name", "x", "--segments", "known", "--option", "token=s3cret"),
        ("add", "file", "--name", "x", "--segments", "ghost", "--option", "folder=/tmp/x"),
        ("add", "file", "--name", "Bad Name", "--segments", "known", "--option", "folder=/x"),
        ("add", "file", "--name", "x", "--segments", "known", "--every", "5s"),
        ("add", "file", "--name", "x", "--segments", "known", "--option", "folder"),
        ("show", "ghost"),
        ("remove", "ghost"),
    ]
    for args in cases:
        code, out, err = run_cli(capsys, monkeypatch, config, "destinations", *args)
        assert code == 2, (args, out, err)
        assert err.count("\n") == 1 and err.startswith("dmp: error: "), err
        assert "s3cret" not in err
    assert settings.names(redis) == []


def test_api_manages_destinations_and_asks_for_runs(redis, client, admin_key, tmp_path):
    """POST, GET, PUT, runs and DELETE under /api/v1/destinations with an admin key."""
    apply_segments(redis, SEGMENT)
    auth = bearer(admin_key)
    body = {
        "name": "drop",
        "kind": "file",
        "segments": ["known"],
        "every": "30m",
        "options": {"folder": str(tmp_path / "out")},
    }
    created = client.post("/api/v1/destinations", json=body, headers=auth)
    assert created.status_code == 201, created.json
    assert created.json["every_seconds"] == 1800
    assert client.post("/api/v1/destinations", json=body, headers=auth).status_code == 409
    listed = client.get("/api/v1/destinations", headers=auth).json
    assert [d["name"] for d in listed] == ["drop"]
    changed = client.put("/api/v1/destinations/drop", json={**body, "every": 3600}, headers=auth)
    assert changed.status_code == 200 and changed.json["every_seconds"] == 3600
    tested = client.post("/api/v1/destinations/drop/test", headers=auth)
    assert tested.status_code == 200 and tested.json["ok"] is True
    asked = client.post("/api/v1/destinations/drop/runs", json={"full": True}, headers=auth)
    assert asked.status_code == 202 and asked.json["full"] is True
    assert redis.hget(keyspace.destination("drop"), "requested_full") == "1"
    assert client.get("/api/v1/destinations/drop/runs", headers=auth).json == []
    assert client.delete("/api/v1/destinations/drop", headers=auth).status_code == 200
    assert client.get("/api/v1/destinations/drop", headers=auth).status_code == 404


def test_api_refuses_secrets_and_bad_bodies(redis, client, admin_key, tmp_path):
    """A secret in options, an unknown segment, a wrong type: 400 problem+json; no key: 401."""
    apply_segments(redis, SEGMENT)
    auth = bearer(admin_key)
    base = {"name": "d", "kind": "file", "segments": ["known"], "options": {"folder": "/tmp/d"}}
    bad = [
        {**base, "options": {"folder": "/tmp/d", "api_key": "s3cret"}},
        {**base, "segments": ["ghost"]},
        {**base, "segments": "known"},
        {**base, "every": "soon"},
        {**base, "options": {"folder": 7}},
        {**base, "kind": "fax"},
    ]
    for body in bad:
        answer = client.post("/api/v1/destinations", json=body, headers=auth)
        assert answer.status_code == 400, (body, answer.json)
        assert answer.content_type == "application/problem+json"
        assert "s3cret" not in answer.get_data(as_text=True)
    assert client.get("/api/v1/destinations").status_code == 401
    assert client.post("/api/v1/destinations", data="{", headers=auth).status_code in (400, 415)
    assert settings.names(redis) == []


def test_options_every_kind_takes_are_checked_once(redis, tmp_path):
    """Bad numbers and URLs in the options every kind takes are refused, naming them."""
    apply_segments(redis, SEGMENT)
    folder = {"folder": str(tmp_path)}
    for option, value in [
        ("retry_base", "nan"),
        ("retry_cap", "-1"),
        ("timeout", "soon"),
        ("retry_attempts", "2.5"),
        ("batch_size", "0"),
        ("base_url", "ftp://x"),
    ]:
        with pytest.raises(settings.Invalid, match=option):
            settings.validate(redis, "x", "file", ["known"], 900, {**folder, option: value})


def test_a_name_the_ui_needs_for_its_own_page_is_refused(redis, tmp_path):
    """``new`` would hide behind the UI's form for adding a destination: refused, saying so."""
    apply_segments(redis, SEGMENT)
    with pytest.raises(settings.Invalid, match="'new' is reserved"):
        settings.validate(redis, "new", "file", ["known"], 900, {"folder": str(tmp_path)})


def test_a_credentials_test_of_an_unreachable_platform_is_a_clear_502(
    redis, client, admin_key, monkeypatch
):
    """`POST …/test` of a platform nobody answers for: 502 problem+json saying where it
    failed, after two short tries (not a sync's minutes of retries); no secret in it."""
    from tests.served import free_port

    apply_segments(redis, SEGMENT)
    monkeypatch.setenv("META_TEST_TOKEN", "s3cret-token")
    options = {
        "token_env": "META_TEST_TOKEN",
        "audience.known": "123",
        "base_url": f"http://127.0.0.1:{free_port()}",
    }
    settings.save(redis, settings.validate(redis, "ads", "meta", ["known"], 900, options))
    answer = client.post("/api/v1/destinations/ads/test", headers=bearer(admin_key))
    assert answer.status_code == 502 and answer.mimetype == "application/problem+json"
    assert "after 2 attempts" in answer.json["detail"]
    assert "s3cret-token" not in answer.get_data(as_text=True)
