"""The destinations pages: list, detail, add and edit, sync now, dry run, test, remove;
bad input, roles and empty states (Flask test client; the browser test walks them too)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from dmp.storage import keyspace
from dmp.ui import destinationdryrun
from dmp.ui.destinationkinds import KINDS
from exporters import export, registry, reports, schedule, settings
from exporters.reports import SegmentReport, SyncReport
from tests.exporters.test_sync import SEGMENT, ingest_and_run, person
from tests.factories import apply_segments

LONG = "Entscheider im Maschinenbau mit Interesse an Automatisierung " * 3


@pytest.fixture
def segment(redis):
    """Store the segment ``known`` (tier medium or more)."""
    apply_segments(redis, SEGMENT)


def add_file(redis, folder: Path, name: str = "drop", every: int = 900):
    """Store a file destination of segment ``known``."""
    found = settings.validate(redis, name, "file", ["known"], every, {"folder": str(folder)})
    settings.save(redis, found)
    return found


def form(folder: Path, **fields: str | None) -> dict[str, str]:
    """Return the add form of a file destination for ``known``, overridden by ``fields``
    (None leaves a field out)."""
    base = {
        "kind": "file",
        "name": "crm-drop",
        "segments": "known",
        "every": "1h",
        "opt_folder": str(folder),
        "opt_format": "csv",
        "opt_channel": "ads",
        "more": "",
    }
    return {k: v for k, v in {**base, **fields}.items() if v is not None}


def text(res) -> str:
    """Return a response's body as text."""
    return res.get_data(as_text=True)


def test_every_kind_of_the_registry_has_a_form() -> None:
    """The form knows every kind the registry does, and no other."""
    assert set(KINDS) == set(registry.KINDS)


def test_the_empty_list_points_to_adding_one(as_marketer, as_viewer) -> None:
    """Without destinations the list says what one is; a marketer gets the way to add one,
    a viewer does not."""
    page = text(as_marketer.get("/ui/destinations/"))
    assert "No destinations yet" in page and 'href="/ui/destinations/new"' in page
    page = text(as_viewer.get("/ui/destinations/"))
    assert "No destinations yet" in page and "/ui/destinations/new" not in page


def test_the_list_shows_kind_segments_schedule_and_last_sync(
    redis, config, segment, as_marketer, tmp_path
) -> None:
    """A synced destination shows its kind, its segment's name as a link, its schedule,
    and the last sync's result and counts."""
    ingest_and_run(redis, config, person("a@x.de"), person("b@x.de", ads=False))
    add_file(redis, tmp_path / "out")
    export.run(redis, config, "drop")
    page = text(as_marketer.get("/ui/destinations/"))
    assert 'href="/ui/destinations/drop"' in page and "File" in page
    assert 'href="/ui/segments/known"' in page
    assert "every 15 minutes" in page
    assert ">ok<" in page
    row = page[page.index('href="/ui/destinations/drop"') :]
    cells = [c.split(">", 1)[1].split("<", 1)[0] for c in row.split('<td class="num"')[1:5]]
    assert cells == ["1", "0", "1", "0"]  # added, removed, skipped (refused), failed


def test_german_numbers_dates_and_long_names(redis, segment, as_marketer, tmp_path) -> None:
    """In German a million reads 1.000.000, the schedule is German, and a long segment
    name is there in full, in an element that wraps."""
    apply_segments(redis, f"id: big\nname: {LONG}\nwhere: {{tier: {{gte: low}}}}\n")
    found = settings.validate(redis, "big", "file", ["big"], 7200, {"folder": str(tmp_path)})
    settings.save(redis, found)
    report = SyncReport("big", "file", 1_790_000_000_000)
    report.segments = [SegmentReport("big", members=1_200_000, added=1_000_000)]
    reports.keep(redis, report)
    headers = {"Accept-Language": "de-DE,de;q=0.9"}
    page = text(as_marketer.get("/ui/destinations/", headers=headers))
    assert "1.000.000" in page and "alle 2 Stunden" in page
    assert LONG.strip() in page and 'class="name"' in page
    page = text(as_marketer.get("/ui/destinations/big", headers=headers))
    assert "1.000.000" in page and "1.200.000" in page and "Letzte Synchronisierungen" in page


def test_adding_a_file_destination_through_the_form(redis, segment, as_marketer, tmp_path):
    """The kind picker leads to the file form; a good form stores the destination and
    shows its page."""
    assert 'href="/ui/destinations/new?kind=file"' in text(as_marketer.get("/ui/destinations/new"))
    page = text(as_marketer.get("/ui/destinations/new?kind=file"))
    assert 'name="opt_folder"' in page and 'value="known"' in page
    res = as_marketer.post("/ui/destinations/new", form(tmp_path / "out"))
    assert res.status_code == 303 and res.headers["Location"] == "/ui/destinations/crm-drop"
    stored = settings.load(redis, "crm-drop")
    assert stored is not None and stored.segments == ("known",) and stored.every_seconds == 3600
    assert stored.options == {"folder": str(tmp_path / "out"), "format": "csv", "channel": "ads"}
    page = text(as_marketer.get("/ui/destinations/crm-drop"))
    assert "every hour" in page and "No sync yet" in page


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"name": "Not A Name!"}, "is not 1-64 lowercase letters"),
        ({"segments": None}, "Choose at least one segment."),
        ({"segments": "nope"}, "is not a valid choice"),
        ({"every": "5s"}, "A duration from 1m to 30d"),
        ({"every": "soon"}, "A duration from 1m to 30d"),
        ({"opt_folder": ""}, "Required."),
        ({"opt_format": "xlsx"}, "Not a valid choice"),
        ({"more": "token=EAAB123"}, "secrets are not stored"),
        ({"more": "just words"}, "one option a line"),
        ({"more": "batch_size=many"}, "is not a whole number"),
        ({"more": "x" * 9000}, "8000"),
        ({"name": "n" * 65}, "64"),
    ],
)
def test_bad_input_comes_back_with_the_reason(
    redis, segment, as_marketer, tmp_path, fields, said
) -> None:
    """A bad form answers 422 with the form, the reason beside it, and stores nothing."""
    res = as_marketer.post("/ui/destinations/new", form(tmp_path, **fields))
    assert res.status_code == 422
    page = text(res)
    assert said in page and "Please correct the marked fields" in page
    assert 'name="opt_folder"' in page
    assert settings.names(redis) == []


def test_a_secret_pasted_where_its_variable_belongs_is_refused(redis, segment, as_marketer):
    """A webhook's secret_env takes a variable's name; a pasted secret is refused."""
    fields = {
        "kind": "webhook",
        "name": "hook",
        "segments": "known",
        "every": "15m",
        "opt_url": "https://hooks.example/dmp",
        "opt_secret_env": "s3cr3t-value-0f-the-hook",
        "opt_channel": "ads",
    }
    res = as_marketer.post("/ui/destinations/new", fields)
    assert res.status_code == 422
    assert "not the secret" in text(res) and settings.names(redis) == []
    res = as_marketer.post("/ui/destinations/new", {**fields, "opt_secret_env": "HOOK_SECRET"})
    assert res.status_code == 303
    assert settings.load(redis, "hook").options["secret_env"] == "HOOK_SECRET"


def test_a_name_taken_is_refused(redis, segment, as_marketer, tmp_path) -> None:
    """Adding a destination under a name in use answers 422 and keeps the first."""
    add_file(redis, tmp_path / "first", name="crm-drop")
    res = as_marketer.post("/ui/destinations/new", form(tmp_path / "second"))
    assert res.status_code == 422 and "A destination of this name exists." in text(res)
    assert settings.load(redis, "crm-drop").options["folder"] == str(tmp_path / "first")


def test_per_segment_targets_are_asked_for_each_chosen_segment(redis, segment, as_marketer):
    """A Meta destination needs a Custom Audience id for each chosen segment: missing, it
    is refused beside the segment's field; given, it is stored as audience.<segment>."""
    fields = {
        "kind": "meta",
        "name": "meta-retargeting",
        "segments": "known",
        "every": "15m",
        "opt_token_env": "META_TOKEN",
    }
    res = as_marketer.post("/ui/destinations/new", fields)
    assert res.status_code == 422 and "Required." in text(res)
    fields["target_audience_known"] = "not digits"
    res = as_marketer.post("/ui/destinations/new", fields)
    assert res.status_code == 422 and "is not the Custom Audience id (digits)" in text(res)
    fields["target_audience_known"] = "23850000000000000"
    assert as_marketer.post("/ui/destinations/new", fields).status_code == 303
    stored = settings.load(redis, "meta-retargeting")
    assert stored.options == {"token_env": "META_TOKEN", "audience.known": "23850000000000000"}


def test_editing_keeps_the_name_and_changes_the_rest(redis, segment, as_marketer, tmp_path):
    """The edit form is filled from the stored settings; saving changes the schedule and
    keeps other options in "more options"."""
    found = settings.validate(
        redis, "drop", "file", ["known"], 900, {"folder": str(tmp_path), "batch_size": "500"}
    )
    settings.save(redis, found)
    page = text(as_marketer.get("/ui/destinations/drop/edit"))
    assert 'value="15m"' in page and "batch_size=500" in page and 'name="name"' not in page
    fields = form(tmp_path, every="2h", more="batch_size=700", name="other")
    res = as_marketer.post("/ui/destinations/drop/edit", fields)
    assert res.status_code == 303 and res.headers["Location"] == "/ui/destinations/drop"
    stored = settings.load(redis, "drop")
    assert stored.every_seconds == 7200 and stored.options["batch_size"] == "700"
    assert settings.names(redis) == ["drop"]
    res = as_marketer.post("/ui/destinations/drop/edit", {**fields, "every": "0m"})
    assert res.status_code == 422 and settings.load(redis, "drop").every_seconds == 7200


def test_sync_now_is_requested_then_run_by_the_worker(
    redis, config, segment, as_marketer, tmp_path
) -> None:
    """ "Sync now" asks the worker; the page says requested and polls; the worker's look
    syncs it and the page shows the added count; the poll then asks for a reload."""
    ingest_and_run(redis, config, person("a@x.de"), person("b@x.de"))
    add_file(redis, tmp_path / "out")
    export.run(redis, config, "drop")  # the first, scheduled sync
    ingest_and_run(redis, config, person("c@x.de"))
    res = as_marketer.post("/ui/destinations/drop/sync")
    assert res.status_code == 303 and export.pending(redis, "drop")[0] is not None
    page = text(as_marketer.get("/ui/destinations/drop"))
    assert ">requested<" in page and 'hx-trigger="every 3s"' in page
    partial = as_marketer.get("/ui/destinations/drop/status", headers={"HX-Request": "true"})
    assert "HX-Refresh" not in partial.headers and ">requested<" in text(partial)
    assert schedule.look(redis, config, threading.Event()) == 1
    partial = as_marketer.get("/ui/destinations/drop/status", headers={"HX-Request": "true"})
    assert partial.headers["HX-Refresh"] == "true" and "hx-trigger" not in text(partial)
    runs = reports.recent(redis, "drop")
    assert len(runs) == 2 and runs[0]["segments"][0]["added"] == 1
    page = text(as_marketer.get("/ui/destinations/drop"))
    assert ">requested<" not in page and ">ok<" in page


def test_a_running_sync_shows_running(redis, segment, as_marketer, tmp_path) -> None:
    """While a sync holds the destination's lock, the page says running and polls."""
    add_file(redis, tmp_path)
    redis.set(keyspace.destination("drop", "lock"), "elsewhere/1/x")
    page = text(as_marketer.get("/ui/destinations/drop"))
    assert ">running<" in page and 'hx-trigger="every 3s"' in page


def test_a_dry_run_counts_and_samples_and_sends_nothing(
    redis, config, segment, as_marketer, as_viewer, tmp_path
) -> None:
    """A dry run shows what would be added with a sample row, writes no file and keeps
    no report; a viewer may ask for one too."""
    ingest_and_run(redis, config, person("a@x.de"), person("b@x.de", ads=False))
    add_file(redis, tmp_path / "out")
    res = as_marketer.post("/ui/destinations/drop/dry-run")
    page = text(res)
    assert res.status_code == 200 and "Would add" in page and "a@x.de" in page
    assert "b@x.de" not in page and "consent refused or withdrawn" in page
    assert not (tmp_path / "out").exists() and reports.recent(redis, "drop") == []
    assert as_viewer.post("/ui/destinations/drop/dry-run").status_code == 200
    res = as_marketer.post("/ui/destinations/drop/dry-run", {"segment": "other"})
    assert res.status_code == 400 and "Choose one of the destination" in text(res)


def test_a_dry_run_of_a_large_segment_is_estimated_from_a_sample(
    redis, config, segment, as_marketer, tmp_path, monkeypatch
) -> None:
    """Past MEMBERS members a dry run looks at the first ones only and scales up."""
    monkeypatch.setattr(destinationdryrun, "MEMBERS", 2)
    ingest_and_run(redis, config, *(person(f"p{i}@x.de") for i in range(6)))
    add_file(redis, tmp_path / "out")
    page = text(as_marketer.post("/ui/destinations/drop/dry-run"))
    assert "Estimated from the first 2 of 6 members" in page and "≈ 6" in page


def test_a_dry_run_before_any_segment_run_says_so(redis, segment, as_marketer, tmp_path):
    """Without a segment run, the dry run says the segments have not run yet."""
    add_file(redis, tmp_path)
    assert "have not run yet" in text(as_marketer.post("/ui/destinations/drop/dry-run"))


def test_test_credentials_says_what_it_proved_or_why_not(
    redis, segment, as_marketer, tmp_path, monkeypatch
) -> None:
    """A folder that takes files passes the test; a webhook whose secret's variable is
    unset fails it with the reason, and the page never shows a secret's value."""
    add_file(redis, tmp_path / "out")
    page = text(as_marketer.post("/ui/destinations/drop/test"))
    assert "The test worked" in page and "takes files" in page
    monkeypatch.delenv("HOOK_SECRET", raising=False)
    hook = settings.validate(
        redis, "hook", "webhook", ["known"], 900,
        {"url": "http://127.0.0.1:9/", "secret_env": "HOOK_SECRET"},
    )  # fmt: skip
    settings.save(redis, hook)
    page = text(as_marketer.post("/ui/destinations/hook/test"))
    assert "The test failed" in page and "HOOK_SECRET is empty or unset" in page
    monkeypatch.setenv("HOOK_SECRET", "do-not-show-this-value")
    page = text(as_marketer.get("/ui/destinations/hook"))
    assert "HOOK_SECRET" in page and "do-not-show-this-value" not in page
    assert ">set<" in page


def test_removing_forgets_the_destination(redis, segment, as_marketer, tmp_path) -> None:
    """Remove asks first (data-confirm), then forgets the destination and says so."""
    add_file(redis, tmp_path)
    assert "data-confirm=" in text(as_marketer.get("/ui/destinations/drop"))
    res = as_marketer.post("/ui/destinations/drop/remove")
    assert res.status_code == 303 and settings.names(redis) == []
    page = text(as_marketer.get(res.headers["Location"]))
    assert "was removed" in page and "No destinations yet" in page
    assert as_marketer.post("/ui/destinations/drop/remove").status_code == 404


def test_a_viewer_sees_but_changes_nothing(redis, segment, as_viewer, tmp_path) -> None:
    """A viewer sees a destination without its change buttons, and every change and the
    forms answer 403."""
    add_file(redis, tmp_path)
    page = text(as_viewer.get("/ui/destinations/drop"))
    assert "Dry run" in page
    assert ">Sync now<" not in page and "/edit" not in page and "/remove" not in page
    for path in ("sync", "remove", "test", "edit"):
        assert as_viewer.post(f"/ui/destinations/drop/{path}").status_code == 403
    assert as_viewer.get("/ui/destinations/new").status_code == 403
    assert as_viewer.get("/ui/destinations/drop/edit").status_code == 403
    assert as_viewer.post("/ui/destinations/new", {"kind": "file"}).status_code == 403
    assert export.pending(redis, "drop")[0] is None


def test_unknown_destinations_are_404(as_marketer) -> None:
    """An unknown or malformed name answers 404 on every page and action."""
    for path in ("nope", "nope/edit", "nope/status", "Bad%20Name", "x" * 300):
        assert as_marketer.get(f"/ui/destinations/{path}").status_code == 404, path
    for path in ("sync", "dry-run", "test", "remove", "edit"):
        assert as_marketer.post(f"/ui/destinations/nope/{path}").status_code == 404, path


def test_changes_need_the_csrf_token(redis, segment, as_marketer, tmp_path) -> None:
    """A change without the session's CSRF token is refused and changes nothing."""
    add_file(redis, tmp_path)
    res = as_marketer.client.post("/ui/destinations/drop/sync", data={})
    assert res.status_code == 400 and export.pending(redis, "drop")[0] is None


def test_older_syncs_are_listed_and_one_is_shown_by_segment(
    redis, segment, as_marketer, tmp_path
) -> None:
    """The page lists recent syncs with their totals and shows the newest by segment; a
    link shows an older one's segments instead."""
    add_file(redis, tmp_path)
    for started, added in ((1_790_000_000_000, 7), (1_790_000_900_000, 1_000_000)):
        report = SyncReport("drop", "file", started)
        report.segments = [SegmentReport("known", added=added, errors=[f"refused {added}"])]
        reports.keep(redis, report)
    page = text(as_marketer.get("/ui/destinations/drop"))
    assert "1,000,000" in page and "refused 1000000" in page and "refused 7" not in page
    assert "?sync=1790000000000" in page
    page = text(as_marketer.get("/ui/destinations/drop?sync=1790000000000"))
    assert "refused 7" in page and "refused 1000000" not in page
