"""The sync engine: consent-filtered deltas, checkpoints that survive a stop, convergence."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import ClassVar

import pytest

from dmp.ingest.worker import Worker
from dmp.membership import runs
from dmp.privacy import requests
from dmp.privacy.export import export_person
from dmp.storage import keyspace
from exporters import export, holdings, registry, settings
from exporters.destination import Batch, Outcome, Settings, Unavailable
from exporters.files import FileDestination
from exporters.reports import Status
from tests.factories import apply_segments, make_hit, send_hits

SEGMENT = """
id: known
where: {tier: {gte: medium}}
"""


def person(email: str, *, ads: bool = True, uid: str = "", ts: int | None = None, **traits):
    """Return a trusted identify of ``email`` giving (or refusing) ads consent."""
    extra = {"timestamp": ts, "received_at": ts} if ts else {}
    return make_hit(
        source="api",
        type="identify",
        event="identify",
        uid=uid,
        user_id=f"user-{email}",
        consent={"ads": ads},
        traits={"email": email, **traits},
        trusted=True,
        **extra,
    )


def ingest_and_run(redis, config, *hits) -> None:
    """Ingest hits and run the segments."""
    send_hits(redis, *hits)
    Worker(redis, config).run(once=True)
    runs.run(redis, config)


def add_file(redis, folder: Path, name: str = "files", **options: str) -> Settings:
    """Store a file destination of segment ``known``."""
    found = settings.validate(
        redis, name, "file", ["known"], 900, {"folder": str(folder), **options}
    )
    settings.save(redis, found)
    return found


def snapshot_emails(folder: Path) -> set[str]:
    """Return the emails of the segment's latest snapshot."""
    latest = (folder / "known" / "LATEST").read_text().strip()
    with open(folder / "known" / latest, newline="") as fh:
        return {row["email"] for row in csv.DictReader(fh)}


@pytest.fixture
def segment(redis):
    """Store the segment ``known`` (tier medium or more)."""
    apply_segments(redis, SEGMENT)


def test_file_destination_holds_consented_members_only(redis, config, segment, tmp_path):
    """Members with ads consent for their email land in the file; one without does not."""
    ingest_and_run(redis, config, person("a@x.de"), person("b@x.de"), person("c@x.de", ads=False))
    add_file(redis, tmp_path / "out")
    report = export.run(redis, config, "files")
    part = report.segments[0]
    assert (part.status, part.members, part.added, part.removed) == (Status.OK, 3, 2, 0)
    assert part.skipped == {"refused": 1}
    assert snapshot_emails(tmp_path / "out") == {"a@x.de", "b@x.de"}
    again = export.run(redis, config, "files").segments[0]
    assert (again.added, again.removed, again.should_hold) == (0, 0, 2)


def test_the_access_export_names_the_destinations_holding_the_person(
    redis, config, segment, tmp_path
):
    """GDPR Art. 15 asks for the recipients: a person a destination holds finds it in
    their export (tool, kind, segment, rows); one it refused does not; after a withdrawal
    and the next sync, the destination no longer holds them."""
    ingest_and_run(redis, config, person("a@x.de"), person("c@x.de", ads=False))
    add_file(redis, tmp_path / "out")
    export.run(redis, config, "files")
    held, refused = (redis.get(f"dmp:id:email:{e}") for e in ("a@x.de", "c@x.de"))
    assert export_person(redis, config, held)["destinations"] == [
        {"destination": "files", "kind": "file", "segment": "known", "rows": 1}
    ]
    assert export_person(redis, config, refused)["destinations"] == []
    send_hits(redis, person("a@x.de", ads=False, ts=make_hit().timestamp + 1000))
    Worker(redis, config).run(once=True)
    export.run(redis, config, "files")
    assert export_person(redis, config, held)["destinations"] == []


def test_withdrawn_consent_and_erasure_remove_at_next_sync(redis, config, segment, tmp_path):
    """A person who withdraws ads consent, and one who is erased, leave at the next sync."""
    ingest_and_run(redis, config, person("a@x.de"), person("b@x.de"), person("c@x.de"))
    add_file(redis, tmp_path / "out")
    export.run(redis, config, "files")
    send_hits(redis, person("a@x.de", ads=False, ts=make_hit().timestamp + 1000))
    Worker(redis, config).run(once=True)
    pid = redis.get("dmp:id:email:b@x.de")
    assert requests.run(redis, config, requests.request_erasure(redis, pid)) is not None
    part = export.run(redis, config, "files").segments[0]  # no new segment run needed
    assert (part.added, part.removed) == (0, 2)
    assert snapshot_emails(tmp_path / "out") == {"c@x.de"}
    deltas = sorted((tmp_path / "out" / "known" / "deltas").glob("*-remove-*.csv"))
    assert len(deltas) == 1


class Flaky(FileDestination):
    """A file destination whose platform goes away after ``fail_after`` batches."""

    fail_after: ClassVar[int] = 10**9
    sent: ClassVar[list[tuple[str, tuple]]] = []

    def send(self, batch: Batch) -> Outcome:
        if len(Flaky.sent) >= Flaky.fail_after:
            raise Unavailable("the platform went away")
        Flaky.sent.append((batch.op.value, tuple(r[1] for r in batch.rows)))
        return super().send(batch)


def test_an_interrupted_sync_resumes_without_resending_or_skipping(
    redis, config, segment, tmp_path, monkeypatch
):
    """A sync that fails after two batches resumes: no acknowledged batch is sent again,
    and the destination ends up holding exactly the audience."""
    monkeypatch.setitem(registry.KINDS, "flaky", Flaky)
    monkeypatch.setattr(Flaky, "sent", [])
    monkeypatch.setattr(Flaky, "fail_after", 2)
    emails = [f"p{i:02d}@x.de" for i in range(10)]
    ingest_and_run(redis, config, *(person(e) for e in emails))
    found = settings.validate(
        redis, "flaky", "flaky", ["known"], 900, {"folder": str(tmp_path), "batch_size": "3"}
    )
    settings.save(redis, found)
    first = export.run(redis, config, "flaky").segments[0]
    assert first.status == Status.FAILED and first.added == 6
    Flaky.fail_after = 10**9
    second = export.run(redis, config, "flaky").segments[0]
    assert second.status == Status.OK and second.added == 4
    sent = [e for _, rows in Flaky.sent for e in rows]
    assert sorted(sent) == sorted(emails)  # each exactly once
    checkpoint = redis.hgetall(keyspace.destination("flaky", "sync:known"))
    assert "plan" not in checkpoint
    held = config.data_dir / "exports" / "flaky" / "known" / checkpoint["held"]
    assert sorted(e.row[1] for e in holdings.read_entries(held)) == sorted(emails)
    assert snapshot_emails(tmp_path) == set(emails)


def test_dry_run_counts_and_samples_without_sending(redis, config, segment, tmp_path):
    """A dry run says what would be sent and sends nothing."""
    ingest_and_run(redis, config, person("a@x.de"), person("b@x.de"))
    add_file(redis, tmp_path / "out")
    report = export.run(redis, config, "files", dry_run=True)
    part = report.segments[0]
    assert (part.status, part.added, part.removed) == (Status.DRY_RUN, 2, 0)
    assert sorted(row[1] for row in part.sample["add"]) == ["a@x.de", "b@x.de"]
    assert not (tmp_path / "out").exists()
    assert export.run(redis, config, "files").segments[0].added == 2


def test_settings_refuse_secrets_unknown_segments_and_bad_names(redis, segment, tmp_path):
    """Options holding a secret, unknown segments, kinds and names are refused."""
    folder = {"folder": str(tmp_path)}
    with pytest.raises(settings.Invalid, match="token_env"):
        settings.validate(redis, "x", "file", ["known"], 900, {**folder, "token": "abc"})
    with pytest.raises(settings.Invalid, match="no segment"):
        settings.validate(redis, "x", "file", ["nope"], 900, folder)
    with pytest.raises(settings.Invalid, match="kind"):
        settings.validate(redis, "x", "nope", ["known"], 900, folder)
    with pytest.raises(settings.Invalid, match="name"):
        settings.validate(redis, "X Y", "file", ["known"], 900, folder)
    with pytest.raises(settings.Invalid, match="format"):
        settings.validate(redis, "x", "file", ["known"], 900, {**folder, "format": "xls"})


def test_schedule_syncs_what_is_due_and_what_was_asked(redis, config, segment, tmp_path):
    """The worker's look syncs a destination never synced, skips it until it is due
    again, and syncs it at once when the API asked for a run."""
    import threading

    from exporters import schedule

    ingest_and_run(redis, config, person("a@x.de"))
    add_file(redis, tmp_path / "out")
    stop = threading.Event()
    assert schedule.look(redis, config, stop) == 1
    assert schedule.look(redis, config, stop) == 0  # every 15 min: not due yet
    export.request(redis, "files", full=True)
    assert schedule.look(redis, config, stop) == 1
    last = export.reports.recent(redis, "files", 1)[0]
    assert last["full"] is True and last["segments"][0]["added"] == 1


def test_metrics_count_rows_and_syncs_per_destination(redis, config, segment, tmp_path, client):
    """/metrics shows rows sent and syncs by destination."""
    from tests.factories import read_metric, scrape

    ingest_and_run(redis, config, person("a@x.de"), person("b@x.de"))
    add_file(redis, tmp_path / "out")
    export.run(redis, config, "files")
    text = scrape(client)
    assert read_metric(text, "dmp_export_rows_total", destination="files", outcome="sent") == 2
    assert read_metric(text, "dmp_export_syncs_total", destination="files", status="ok") == 1


def test_what_a_crash_left_in_the_folder_is_tidied_by_the_next_sync(
    redis, config, segment, tmp_path
):
    """A plan written but never checkpointed, an old holding and a temporary file (what a
    crash can leave) are gone after the next sync; the holding it made stays."""
    ingest_and_run(redis, config, person("a@x.de"))
    add_file(redis, tmp_path / "out")
    export.run(redis, config, "files")
    folder = config.data_dir / "exports" / "files" / "known"
    (folder / "plan-0-dead").mkdir()
    (folder / "plan-0-dead" / "add.parquet").write_bytes(b"half")
    (folder / "held-0-old.parquet").write_bytes(b"old")
    (folder / ".held-1.parquet.tmp").write_bytes(b"tmp")
    send_hits(redis, person("b@x.de"))
    Worker(redis, config).run(once=True)
    runs.run(redis, config)
    assert export.run(redis, config, "files").segments[0].added == 1
    held = redis.hget(keyspace.destination("files", "sync:known"), "held")
    assert sorted(p.name for p in folder.iterdir()) == [held]
    assert sorted(e.row[1] for e in holdings.read_entries(folder / held)) == ["a@x.de", "b@x.de"]


def test_contacts_say_whether_they_hold_more_than_an_email(redis, config, segment):
    """read_contacts marks who holds a name, phone or address part beside the email (the
    ad platforms then skip looking at each field of the others)."""
    from dmp.membership.audience import read_contacts
    from dmp.records import Category

    ingest_and_run(redis, config, person("a@x.de"), person("b@x.de", first_name="Bea"))
    pids = [redis.get("dmp:id:email:a@x.de"), redis.get("dmp:id:email:b@x.de")]
    found = {c.email: c.details for c in read_contacts(redis, pids, Category.ADS)}
    assert found == {"a@x.de": False, "b@x.de": True}


@pytest.mark.parametrize("kind", ["meta", "google"])  # reads it at a call; when made
def test_a_destination_whose_secret_is_unset_fails_once_per_schedule(
    redis, config, segment, monkeypatch, kind
):
    """A destination whose secret's variable is unset fails with a line naming the
    variable, and the schedule tries it again at its next time, not at every look."""
    import threading

    from exporters import schedule

    monkeypatch.delenv("NO_SUCH_TOKEN", raising=False)
    ingest_and_run(redis, config, person("a@x.de"))
    options = {"token_env": "NO_SUCH_TOKEN", "audience.known": "123"}
    options |= {"operating_account_id": "1234567890"} if kind == "google" else {}
    settings.save(redis, settings.validate(redis, "ads", kind, ["known"], 900, options))
    stop = threading.Event()
    assert schedule.look(redis, config, stop) == 1
    assert schedule.look(redis, config, stop) == 0
    (report,) = export.reports.recent(redis, "ads", 10)
    assert report["status"] == Status.FAILED
    assert "NO_SUCH_TOKEN" in report["segments"][0]["error"]
