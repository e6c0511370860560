"""Erasure (GDPR Art. 17): gone from Redis and every answer at once, nothing brings them back."""

from __future__ import annotations

import json
import threading

import polars as pl
import pytest

from dmp.access import apikeys
from dmp.cli import main
from dmp.ingest.eventlog import scan_events
from dmp.ingest.worker import Worker
from dmp.matrix import builds
from dmp.membership import runs
from dmp.people import erasure
from dmp.people.identity import Identifier, IdKind
from dmp.privacy import requests
from dmp.storage import keyspace
from tests.factories import (
    NOW,
    apply_segments,
    bearer,
    make_hit,
    make_identify,
    person_of,
    send_hits,
)

SEGMENT = "id: readers\nname: Readers\nwhere: {did: {event: page}}\n"
EMAIL = "erika.muster@acme.de"


@pytest.fixture
def erika(redis, config, drain) -> str:
    """Erika: two browsers merged by her email, a segment, a lookup answer. Her id."""
    send_hits(redis, make_hit(uid="c-erika-1", url="https://acme.de/crm"))
    send_hits(redis, make_hit(uid="c-erika-2", timestamp=NOW + 1000))
    drain()
    send_hits(redis, make_identify(EMAIL, uid="c-erika-1", phone="+49 171 5550199"))
    send_hits(redis, make_identify(EMAIL, uid="c-erika-2"))
    send_hits(redis, make_hit(uid="c-other", url="https://acme.de/other"))
    drain()
    apply_segments(redis, SEGMENT)
    runs.run(redis, config)
    return person_of(redis, IdKind.EMAIL, EMAIL)["person_id"]


def _redis_text(redis) -> str:
    """Every key and value in Redis, as text (to look for what must be gone)."""
    out = []
    for key in redis.scan_iter(count=1000):
        kind = redis.type(key)
        value = {
            "string": lambda k: redis.get(k),
            "hash": lambda k: redis.hgetall(k),
            "set": lambda k: sorted(redis.smembers(k)),
            "zset": lambda k: redis.zrange(k, 0, -1),
            "list": lambda k: redis.lrange(k, 0, -1),
            "stream": lambda k: redis.xrange(k),
        }[kind](key)
        out.append(f"{key} {value}")
    return "\n".join(out)


def _erase_in_background(client, admin_key, redis, config, pid: str, **kwargs):
    """DELETE the person while a worker runs, as `dmp serve` does."""
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set():
            Worker(redis, config).run(once=True)
            stop.wait(0.05)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        return client.delete(f"/api/v1/persons/{pid}", headers=bearer(admin_key), **kwargs)
    finally:
        stop.set()
        thread.join(timeout=30)


def test_delete_erases_the_person_from_redis_and_every_answer(
    client, redis, config, admin_key, erika, drain
):
    """DELETE answers what was removed; afterwards no key, value or answer names her:
    person, find by email or cookie, lookups, segment sets; the merged-away id too."""
    partner = apikeys.create_key(redis, apikeys.Scope.PARTNER, "DSP", ("readers",))
    assert client.get(
        "/api/v1/lookup", query_string={"uid": "c-erika-1"}, headers=bearer(partner)
    ).get_json()["data"]
    merged = sorted(redis.smembers(keyspace.person(erika, "merged")))
    assert len(merged) == 1
    resp = _erase_in_background(
        client, admin_key, redis, config, merged[0], json={"reason": "ticket 7"}
    )
    assert resp.status_code == 200, resp.data
    report = resp.get_json()
    assert report["status"] == "erased" and report["person_id"] == erika  # via the old id
    assert report["identifiers"] == {"email": 1, "phone": 1, "uid": 2, "user": 1}
    assert report["segments"] == ["readers"] and report["merged_ids"] == 1
    # What compaction, the next matrix build and the waiting caller need keeps the
    # person id (not who they were), until compaction and the build ran and the report
    # expired.
    bookkeeping = (
        keyspace.ERASURE_PENDING,
        keyspace.ERASURE_LOG,
        keyspace.control_queued(""),
        keyspace.control_result(""),
        keyspace.MATRIX_TOUCHED,
    )
    text = "\n".join(
        line for line in _redis_text(redis).splitlines() if not line.startswith(bookkeeping)
    )
    for gone in (erika, *merged, EMAIL, "c-erika-1", "c-erika-2", "+491715550199"):
        assert gone not in text, gone
    assert "c-other" in text  # the other visitor is untouched
    for path in (f"/api/v1/persons/{erika}", f"/api/v1/persons/{merged[0]}/export"):
        assert client.get(path, headers=bearer(admin_key)).status_code == 404
    found = client.get("/api/v1/persons", query_string={"email": EMAIL}, headers=bearer(admin_key))
    assert found.status_code == 404
    lookup = client.get(
        "/api/v1/lookup", query_string={"uid": "c-erika-1"}, headers=bearer(partner)
    )
    assert lookup.status_code == 200 and lookup.get_json() == {"data": []}
    assert erika not in redis.smembers(keyspace.segment("readers", "members"))
    (_, entry), *_ = redis.xrange(keyspace.ERASURE_LOG)
    assert entry["reason"] == "ticket 7" and len(json.loads(entry["identifiers"])) == 5
    pending = redis.smembers(keyspace.ERASURE_PENDING)
    assert {f"person:{erika}", f"person:{merged[0]}", "uid:c-erika-1"} <= pending
    for incremental in (True, False):  # her rows are still in the files until compaction
        built = builds.build(redis, config, incremental=incremental)
        rows = pl.read_parquet(built.path)
        assert erika not in rows["person_id"].to_list() and rows.height >= 1
    again = client.delete(f"/api/v1/persons/{erika}", headers=bearer(admin_key))
    assert again.status_code == 404 and again.mimetype == "application/problem+json"


def test_hits_queued_around_the_erasure_cannot_bring_her_back(redis, config, erika, drain):
    """Hits before the request (in the worker's buffer, not yet in any file), the request,
    and hits after it with her cookie, all in one read batch: after the worker, no person,
    no row of hers in the event log, and the later hits counted only in aggregate."""
    before = make_hit(uid="c-erika-1", url="https://acme.de/before")
    send_hits(redis, before)
    request_id = requests.request_erasure(redis, erika, by="dpo")
    after = make_hit(uid="c-erika-1", url="https://acme.de/after", timestamp=NOW + 5000)
    send_hits(redis, after, make_identify(EMAIL, uid="c-erika-2"))
    drain()
    assert requests.report(redis, request_id)["found"] is True
    assert redis.get(keyspace.identifier("uid", "c-erika-1")) is None
    assert redis.get(keyspace.identifier("email", EMAIL)) is None
    events = scan_events(config.events_dir).collect()
    assert events.filter(events["event_id"] == before.event_id).height == 0  # buffer dropped
    assert events.filter(events["event_id"] == after.event_id).height == 0  # counted only
    assert events.filter(events["person_id"] == erika).height > 0  # until compaction


def test_the_cli_forgets_by_email_and_says_where(main_argv, redis, erika, capsys):
    """`dmp forget --email` erases (running the worker itself when none runs) and prints
    what went where; an unknown email is exit 2 with one line."""
    main([*main_argv, "forget", "--email", EMAIL.upper(), "--reason", "mail"])
    out = capsys.readouterr().out
    assert f"erased person {erika}" in out and "compact" in out
    assert redis.get(keyspace.identifier("email", EMAIL)) is None
    assert erasure.erased_before(redis, [Identifier(IdKind.EMAIL, EMAIL)]) == [True]
    for args in (["--email", EMAIL], ["--person", "nothex"], []):
        with pytest.raises(SystemExit) as exit_info:
            main([*main_argv, "forget", *args])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("dmp: error: ")


def test_the_api_answers_202_while_no_worker_runs(
    client, redis, admin_key, erika, drain, monkeypatch
):
    """With no worker the DELETE is queued (202 with the request id); the report is there
    once a worker ran; bad ids and bodies are problems."""
    monkeypatch.setattr(requests, "WAIT_SECONDS", 0.2)
    resp = client.delete(f"/api/v1/persons/{erika}", headers=bearer(admin_key))
    assert resp.status_code == 202
    request_id = resp.get_json()["request"]
    status = client.get(f"/api/v1/erasures/{request_id}", headers=bearer(admin_key))
    assert status.status_code == 202 and status.get_json()["status"] == "queued"
    drain()
    status = client.get(f"/api/v1/erasures/{request_id}", headers=bearer(admin_key))
    assert status.status_code == 200 and status.get_json()["status"] == "erased"
    for path, body, code in [
        ("/api/v1/persons/xyz", None, 400),
        (f"/api/v1/persons/{erika}", "[1]", 400),
        (f"/api/v1/persons/{erika}", '{"reason": 5}', 400),
        (f"/api/v1/persons/{erika}", "x" * 5000, 413),
    ]:
        bad = client.delete(
            path, data=body, headers={**bearer(admin_key), "Content-Type": "application/json"}
        )
        assert bad.status_code == code and bad.mimetype == "application/problem+json"
    unknown = client.get("/api/v1/erasures/0123456789abcdef", headers=bearer(admin_key))
    assert unknown.status_code == 404


def test_an_import_skips_an_erased_email_unless_told(runner, redis, config, erika, tmp_path):
    """A CRM file naming an erased email: reported as erased before and skipped; with
    --include-erased the row is taken and the email counts as erased no more."""
    from dmp.cli import cli

    requests.run(redis, config, requests.request_erasure(redis, erika))
    crm = tmp_path / "crm.csv"
    crm.write_text(f"email;crm_id\n{EMAIL};C-9\nneu@acme.de;C-10\n", encoding="utf-8")
    result = runner.invoke(cli, ["import", "crm", str(crm), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert (report["imported"], report["erased_before"]) == (1, 1)
    assert redis.get(keyspace.identifier("email", EMAIL)) is None
    plain = runner.invoke(cli, ["import", "crm", str(crm)])
    assert "1 of persons erased before skipped (--include-erased takes them)" in plain.output
    taken = runner.invoke(cli, ["import", "crm", str(crm), "--include-erased", "--json"])
    assert json.loads(taken.output[taken.output.index("{") :])["imported"] == 1
    assert person_of(redis, IdKind.EMAIL, EMAIL)["identifiers"]["crm"] == ["C-9"]
    assert erasure.erased_before(redis, [Identifier(IdKind.EMAIL, EMAIL)]) == [False]


def test_the_newsletter_webhook_skips_an_erased_email_and_says_so(
    client, redis, config, import_key, erika
):
    """The newsletter tool's webhook naming her email after her erasure: skipped, and the
    answer counts it as erased before."""
    requests.run(redis, config, requests.request_erasure(redis, erika))
    events = [
        {"email": EMAIL, "event": "open", "time": "2026-09-21T10:00:00Z"},
        {"email": "other@acme.de", "event": "open", "time": "2026-09-21T10:00:00Z"},
    ]
    resp = client.post("/hooks/newsletter", json={"events": events}, headers=bearer(import_key))
    assert resp.status_code == 202
    assert resp.get_json() == {"accepted": 1, "duplicates": 0, "erased_before": 1}


def test_an_erasure_cut_short_finishes_when_applied_again(redis, erika, monkeypatch):
    """A worker that dies after removing her from Redis but before marking her
    identifiers and rows: the request, delivered again, finishes from its stored plan
    (found, identifiers marked erased, rows pending for compaction, one log entry, the
    tier count dropped once), rather than finding nobody."""
    from dmp.people import control, removal

    tiers_before = int(redis.hget(keyspace.STATS, "persons:high") or 0)
    hit = control.control_hit(erasure.ERASE, erika, "cut-short")

    def die(*_args):
        raise SystemExit("the worker died here")

    with monkeypatch.context() as patched:
        patched.setattr(removal, "_forget_in_logs", die)
        with pytest.raises(SystemExit):
            erasure.apply(redis, hit)
    report = erasure.apply(redis, hit)
    assert report["found"] is True and report["person_id"] == erika
    assert report["identifiers"] == {"email": 1, "phone": 1, "uid": 2, "user": 1}
    assert erasure.erased_before(redis, [Identifier(IdKind.EMAIL, EMAIL)]) == [True]
    assert f"person:{erika}" in redis.smembers(keyspace.ERASURE_PENDING)
    assert redis.xlen(keyspace.ERASURE_LOG) == 1
    assert int(redis.hget(keyspace.STATS, "persons:high") or 0) == tiers_before - 1
    stored = {k: v for k, v in report.items() if k != "erased_ids"}
    assert erasure.apply(redis, hit) == stored  # delivered once more: the stored report
    assert redis.get(keyspace.control_plan("cut-short")) is None
