"""One segment to Meta, Mailchimp and a file: each holds exactly the audience it should,
after consent changes, unsubscribes and a worker killed mid-sync (kill -9)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from dmp.cli import cli
from dmp.ingest.worker import Worker
from dmp.storage import keyspace
from exporters import export, settings
from exporters.identifiers import sha256_hex
from exporters.reports import Status
from tests.exporters.contracts.brevo import Brevo
from tests.exporters.contracts.mailchimp import MailchimpServer
from tests.exporters.contracts.meta import MetaGraph
from tests.exporters.contracts.server import ContractServer
from tests.exporters.test_sync import SEGMENT, ingest_and_run
from tests.factories import apply_segments, make_hit, send_hits
from tests.served import serve_env, wait_for

TOKEN, MC_KEY, AUDIENCE = "meta-test-token-0123", "0123abcdef-us21", "6001"
BREVO_KEY, BREVO_LIST = "xkeysib-test-0123", 7
EMAILS = [f"p{i:02d}@acme-kunde.de" for i in range(24)]


def person(email: str, ts: int, *, ads: bool = True, newsletter: bool = True):
    """Return a CRM-like trusted identify giving ads and email consent for ``email``."""
    return make_hit(
        source="api",
        type="identify",
        event="identify",
        user_id=f"user-{email}",
        consent={"ads": ads, "email": newsletter},
        traits={"email": email, "first_name": "Anna", "last_name": "Müller"},
        trusted=True,
        timestamp=ts,
        received_at=ts,
    )


@pytest.fixture
def platforms(monkeypatch) -> Iterator[tuple[MetaGraph, ContractServer, MailchimpServer]]:
    """Start Meta's and Mailchimp's contract servers; put their secrets in the env."""
    monkeypatch.setenv("META_TEST_TOKEN", TOKEN)
    monkeypatch.setenv("MC_TEST_KEY", MC_KEY)
    graph = MetaGraph(TOKEN)
    graph.create_audience(AUDIENCE, "known")
    with ContractServer(graph.app()) as meta, MailchimpServer(MC_KEY) as mailchimp:
        yield graph, meta, mailchimp


def configure(redis, meta_url: str, mailchimp_url: str, folder, batch: int = 50, brevo=""):
    """Store the destinations of segment ``known``: Meta, Mailchimp, files (and Brevo)."""
    common = {"retry_base": "0.01", "batch_size": str(batch)}
    kinds = [
        ("meta", "meta", {"token_env": "META_TEST_TOKEN", "audience.known": AUDIENCE}),
        ("news", "mailchimp", {"api_key_env": "MC_TEST_KEY", "list_id": "a1b2c3d4e5"}),
        ("drop", "file", {"folder": str(folder)}),
    ]
    if brevo:
        options = {"api_key_env": "BREVO_TEST_KEY", "list.known": str(BREVO_LIST)}
        kinds.append(("mails", "brevo", {**options, "per_minute": "0"}))
    urls = {"meta": meta_url, "mailchimp": f"{mailchimp_url}/3.0", "brevo": f"{brevo}/v3"}
    for name, kind, options in kinds:
        base = {"base_url": urls[kind]} if kind in urls else {}
        found = settings.validate(redis, name, kind, ["known"], 900, {**common, **base, **options})
        settings.save(redis, found)


def meta_emails(graph: MetaGraph) -> set[str]:
    """Return the hashed emails the Meta audience holds."""
    return {row[0] for row in graph.members(AUDIENCE, ("EMAIL",))}


def file_emails(folder) -> set[str]:
    """Return the emails of the file destination's latest snapshot."""
    latest = (folder / "known" / "LATEST").read_text().strip()
    with open(folder / "known" / latest, newline="") as fh:
        return {row["email"] for row in csv.DictReader(fh)}


def sync_all(redis, config) -> None:
    """Sync every destination once; each must finish."""
    for name in settings.names(redis):
        report = export.run(redis, config, name)
        assert report.status == Status.OK, report.as_dict()


def test_a_segment_lands_in_meta_mailchimp_brevo_and_a_file_and_follows_consent(
    redis, config, platforms, tmp_path, client, import_key, runner, monkeypatch
):
    """The audience lands hashed in Meta, as pending tagged members in Mailchimp, in a
    Brevo list and in a file. At the next sync: withdrawn ads consent leaves Meta and the
    file; an unsubscribe through Mailchimp's own webhook leaves Mailchimp and Brevo; and a
    newsletter file imported later, with an older event, does not bring the person back."""
    graph, meta, mailchimp = platforms
    monkeypatch.setenv("BREVO_TEST_KEY", BREVO_KEY)
    brevo = Brevo(BREVO_KEY, {BREVO_LIST: "known"})
    apply_segments(redis, SEGMENT)
    now = make_hit().timestamp
    ingest_and_run(redis, config, *(person(e, now) for e in EMAILS))
    with brevo.server:
        configure(redis, meta.url, mailchimp.url, tmp_path / "drop", brevo=brevo.server.url)
        sync_all(redis, config)
        assert meta_emails(graph) == {sha256_hex(e) for e in EMAILS}
        assert mailchimp.holders("known") == set(EMAILS)
        assert mailchimp.member(EMAILS[0]).status == "pending"  # no double opt-in yet
        assert brevo.members(BREVO_LIST) == set(EMAILS)
        assert file_emails(tmp_path / "drop") == set(EMAILS)

        gone_ads, gone_mail = EMAILS[1], EMAILS[2]
        send_hits(redis, person(gone_ads, now + 60_000, ads=False))
        fired = datetime.fromtimestamp(now / 1000 + 120, UTC).strftime("%Y-%m-%d %H:%M:%S")
        form = {"type": "unsubscribe", "fired_at": fired}
        form |= {"data[email]": gone_mail, "data[list_id]": "a1b2c3d4e5"}
        answer = client.post(f"/hooks/newsletter/mailchimp?key={import_key}", data=form)
        assert answer.status_code < 300, answer.get_data(as_text=True)
        Worker(redis, config).run(once=True)
        sync_all(redis, config)  # no segment run in between: consent is read at the sync
        assert meta_emails(graph) == {sha256_hex(e) for e in EMAILS if e != gone_ads}
        assert mailchimp.holders("known") == set(EMAILS) - {gone_mail}
        assert brevo.members(BREVO_LIST) == set(EMAILS) - {gone_mail}
        assert file_emails(tmp_path / "drop") == set(EMAILS) - {gone_ads}

        old = tmp_path / "newsletter.csv"
        old.write_text(f"email,event,time\n{gone_mail},sent,{(now - 86_400_000) // 1000}\n")
        result = runner.invoke(cli, ["import", "newsletter", str(old), "--no-wait"])
        assert result.exit_code == 0, result.output
        Worker(redis, config).run(once=True)
        sync_all(redis, config)
        assert gone_mail not in mailchimp.holders("known")
        assert gone_mail not in brevo.members(BREVO_LIST)


def test_kill_9_mid_sync_then_restart_converges_without_resending(
    redis, config, platforms, tmp_path
):
    """A `dmp export run` killed (SIGKILL) between batches leaves a plan; the next sync
    resumes it: Meta ends up holding exactly the audience, and no acknowledged batch is
    sent again (only the one in flight at the kill may be, and adds are idempotent)."""
    graph, meta, mailchimp = platforms
    apply_segments(redis, SEGMENT)
    ingest_and_run(redis, config, *(person(e, make_hit().timestamp) for e in EMAILS))
    configure(redis, meta.url, mailchimp.url, tmp_path / "drop", batch=2)
    slow = lambda: time.sleep(0.25)  # noqa: E731 (answers after a pause, then normally)
    meta.inject(*([slow] * 40))
    env = {**serve_env(config.data_dir), "DMP_REDIS_URL": config.redis_url}
    env |= {"META_TEST_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dmp", "export", "run", "meta"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: len(graph.acknowledged()) >= 3 or None, 30, "three batches acked")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    at_kill = len(graph.acknowledged())
    assert 3 <= at_kill < len(EMAILS) // 2, "the kill should land mid-sync"
    assert redis.hget(keyspace.destination("meta", "sync:known"), "plan"), (
        "a plan is left to resume"
    )
    report = export.run(redis, config, "meta")  # the dead holder's lock is freed at once
    assert report.status == Status.OK, report.as_dict()
    assert meta_emails(graph) == {sha256_hex(e) for e in EMAILS}
    acked = graph.acknowledged(("EXTERN_ID",))
    sent = Counter(row[0] for op, rows in acked if op == "add" for row in rows)
    twice = {h for h, n in sent.items() if n > 1}
    assert all(n <= 2 for n in sent.values())
    assert len(twice) <= 2, "only the batch in flight at the kill may be sent again"


def test_an_unsubscribe_mailchimp_reports_during_a_sync_flows_back(
    redis, config, platforms, tmp_path, monkeypatch
):
    """Someone who unsubscribed in Mailchimp itself is reported by the sync: dmp withdraws
    their email consent (the proof names Mailchimp), and Brevo drops them next sync."""
    from dmp.people import consents
    from dmp.storage import keyspace

    graph, meta, mailchimp = platforms
    monkeypatch.setenv("BREVO_TEST_KEY", BREVO_KEY)
    brevo = Brevo(BREVO_KEY, {BREVO_LIST: "known"})
    apply_segments(redis, SEGMENT)
    ingest_and_run(redis, config, *(person(e, make_hit().timestamp) for e in EMAILS[:4]))
    gone = EMAILS[0]
    mailchimp.put_member(gone, "unsubscribed")
    with brevo.server:
        configure(redis, meta.url, mailchimp.url, tmp_path / "drop", brevo=brevo.server.url)
        assert export.run(redis, config, "mails").status == Status.OK
        assert brevo.members(BREVO_LIST) == set(EMAILS[:4])
        report = export.run(redis, config, "news")
        assert report.segments[0].unsubscribed == 1
        Worker(redis, config).run(once=True)
        pid = redis.get(keyspace.identifier("email", gone))
        state = redis.hget(keyspace.person(pid), f"c|email|email:{gone}")
        assert consents.parse_value(state)[0] is False
        proofs = consents.history(redis.lrange(keyspace.person(pid, "consentlog"), 0, -1))
        assert proofs[-1]["granted"] is False and proofs[-1].get("tool") == "mailchimp"
        assert export.run(redis, config, "mails").status == Status.OK
        assert brevo.members(BREVO_LIST) == set(EMAILS[1:4])
        assert mailchimp.member(gone).status == "unsubscribed"
