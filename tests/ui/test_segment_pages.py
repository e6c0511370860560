"""The segment pages: list, one segment, version diff, overlap; roles, bad input, empty
states, long names and large numbers (Flask test client, real Redis, real runs)."""

from __future__ import annotations

import json
import re
import time

import pytest

from dmp.membership import definitions, overlaps, runs
from dmp.membership.results import segments_dir
from dmp.storage import keyspace
from dmp.ui import i18n, segmentoverlap
from dmp.ui.segmentformat import PageFormats
from tests.factories import apply_segments, run_synth

SEGMENTS = """
id: known
name: Known by email
description: Everyone with an email address
iab: ["271"]
where: {tier: {gte: medium}}
---
id: active
name: Active this month
where: {did: {event: page, within_days: 30}}
"""
LONG_NAME = "Entscheider im DACH-Raum mit Interesse an Marketing-Automation " * 4
DE = {"Accept-Language": "de-DE,de;q=0.9"}


@pytest.fixture
def world(runner, redis, config) -> dict:
    """Return two segments run twice over 120 synth persons, ``known`` changed between."""
    run_synth(runner, 120, 20, 5)
    apply_segments(redis, SEGMENTS)
    first = runs.run(redis, config)
    apply_segments(redis, SEGMENTS.replace("{tier: {gte: medium}}", "{tier: {gte: high}}"))
    second = runs.run(redis, config)
    return {"first": first, "second": second}


def _text(res) -> str:
    return res.get_data(as_text=True)


def test_the_empty_list_says_what_a_segment_is(as_marketer, as_viewer):
    """Without segments the list explains them; a marketer gets the New segment button
    to the builder, a viewer does not."""
    page = _text(as_marketer.get("/ui/segments/"))
    assert "A segment is a named rule" in page and 'href="/ui/segments/builder/"' in page
    seen = as_viewer.get("/ui/segments/")
    assert seen.status_code == 200 and "A segment is a named rule" in _text(seen)
    assert "/ui/segments/builder/" not in _text(seen)


def test_the_list_shows_size_trend_share_and_moves(world, as_marketer, redis, config):
    """Each row has the size of the last run (linked to its members), a sparkline of the
    runs, the share of all persons and who entered and left; and it reads no member file."""
    for path in segments_dir(config).glob("members-*.parquet"):
        path.unlink()  # the list reads run records only
    page = _text(as_marketer.get("/ui/segments/"))
    second = world["second"]
    size = second.members["known"]
    assert 'href="/ui/persons/?segment=known"' in page
    assert re.search(rf">{size}</a>", page), page
    assert page.count('class="spark"') == 2
    record = json.loads(redis.lindex(keyspace.SEGMENT_RUNS, 0))
    entered, left = record["changes"].get("known", [0, 0])
    assert left == world["first"].members["known"] - size + entered and left > 0
    assert f"−{left}" in page
    share = size / record["persons"] * 100
    assert f"{share:.1f}%" in page
    assert "Known by email" in page and "Everyone with an email address" in page


def test_a_long_name_and_a_million_members_in_german(world, as_marketer, redis):
    """A 200-character name is shown whole (it wraps); 1,000,000 members read 1.000.000
    in German, with their share of 2,000,000 persons as 50,0 %."""
    apply_segments(redis, f"id: long\nname: {LONG_NAME[:200]}\nwhere: {{score: {{gte: 0}}}}")
    record = json.loads(redis.lindex(keyspace.SEGMENT_RUNS, 0))
    record["run_id"] += "-next"
    record["members"] |= {"long": 1_000_000}
    record["persons"] = 2_000_000
    redis.lpush(keyspace.SEGMENT_RUNS, json.dumps(record))
    page = _text(as_marketer.get("/ui/segments/", headers=DE))
    assert "1.000.000" in page and "50,0" in page
    assert LONG_NAME[:200].strip() in page
    one = _text(as_marketer.get("/ui/segments/long", headers=DE))
    assert "1.000.000" in one and "Mitglieder" in one


def test_one_segment_shows_definition_history_and_versions(world, as_marketer):
    """The page has the name, description, IAB category, the YAML, the runs with their
    moves, the versions with a link to compare, Edit and Delete."""
    page = _text(as_marketer.get("/ui/segments/known"))
    assert "Known by email" in page and "Everyone with an email address" in page
    assert ">271<" in page
    assert "where:\n  tier: {gte: high}" in page
    assert page.count('class="when"') >= 2 + 2  # two runs, two versions
    assert "/ui/segments/known/diff?from=1&amp;to=2" in page
    assert 'href="/ui/segments/builder/known"' in page
    assert 'action="/ui/segments/known/delete"' in page and "data-confirm=" in page
    assert 'href="/ui/persons/?segment=known"' in page
    assert '<figure class="chart"' in page


def test_a_viewer_sees_no_buttons_and_may_not_delete(world, as_viewer, redis):
    """A viewer reads the segment without Edit and Delete, and a delete is refused."""
    page = _text(as_viewer.get("/ui/segments/known"))
    assert "Known by email" in page and "/delete" not in page and "/builder/" not in page
    assert as_viewer.post("/ui/segments/known/delete").status_code == 403
    assert definitions.get_segment(redis, "known") is not None


def test_a_marketer_deletes_a_segment(world, as_marketer, redis):
    """Delete ends the segment (its versions stay); the list says so, its page is a 404
    saying when it was deleted."""
    res = as_marketer.post("/ui/segments/known/delete")
    assert res.status_code == 303 and res.headers["Location"] == "/ui/segments/"
    assert definitions.get_segment(redis, "known") is None
    listed = _text(as_marketer.get("/ui/segments/"))
    assert "Segment known was deleted" in listed
    gone = as_marketer.get("/ui/segments/known")
    assert gone.status_code == 404 and "was deleted on" in _text(gone)
    assert as_marketer.post("/ui/segments/known/delete").status_code == 404
    assert (
        as_marketer.post("/ui/segments/known/delete", data={"csrf_token": "x"}).status_code == 400
    )


@pytest.mark.parametrize("sid", ["nope", "Bad_Id", "x" * 300])
def test_an_unknown_segment_is_a_friendly_404(as_marketer, sid):
    """An id no segment has is a 404 page that leads back to the list."""
    res = as_marketer.get(f"/ui/segments/{sid}")
    assert res.status_code == 404 and "Segment not found" in _text(res)
    assert 'href="/ui/segments/"' in _text(res)
    assert as_marketer.get(f"/ui/segments/{sid}/diff").status_code == 404


def test_the_diff_marks_removed_and_added_lines(world, as_marketer):
    """v1 → v2 of known: the old condition removed, the new one added, marked by a sign
    and by text, not by colour alone; the default compares the last two versions."""
    page = _text(as_marketer.get("/ui/segments/known/diff?from=1&to=2"))
    assert re.search(r'<tr class="removed">.*?tier: \{gte: medium\}', page, re.S)
    assert re.search(r'<tr class="added">.*?tier: \{gte: high\}', page, re.S)
    assert ">removed<" in page and ">added<" in page
    assert "1 lines added, 1 lines removed" in page
    default = _text(as_marketer.get("/ui/segments/known/diff"))
    assert default.split('<table class="diff">')[1] == page.split('<table class="diff">')[1]
    same = _text(as_marketer.get("/ui/segments/known/diff?from=2&to=2"))
    assert "The same version on both sides" in same


@pytest.mark.parametrize(
    ("query", "status", "says"),
    [
        ("from=x&to=2", 400, "from: expected a version number"),
        ("from=1&to=-2", 400, "to: expected a version number"),
        ("from=1&to=" + "9" * 40, 400, "to: expected a version number"),
        ("from=7&to=2", 404, "from: there is no version 7"),
    ],
)
def test_bad_versions_are_a_page_with_the_problem(world, as_marketer, query, status, says):
    """A version that is no number is a 400, one the segment does not have a 404; both
    pages keep the selects to pick again."""
    res = as_marketer.get(f"/ui/segments/known/diff?{query}")
    assert res.status_code == status and says in _text(res)
    assert '<select id="from" name="from">' in _text(res)


def test_a_segment_that_failed_shows_its_error(world, as_marketer, redis, config):
    """A stored definition that no longer passes (stored before a check) fails in the
    run: the list marks it, its page shows the error."""
    source = {
        "id": "active",
        "name": "Active this month",
        "description": "",
        "where": {"did": {"event": "page", "within_days": float("inf")}},
    }
    key = keyspace.segment("active")
    version = int(redis.hget(key, "version")) + 1
    redis.hset(key, mapping={"definition": json.dumps(source), "version": version})
    redis.rpush(
        keyspace.segment("active", "versions"),
        json.dumps({"version": version, "at": 1, "definition": source}),
    )
    ran = runs.run(redis, config)
    assert "active" in ran.failed
    listed = _text(as_marketer.get("/ui/segments/"))
    assert 'class="failed"' in listed and "within_days" in listed
    page = as_marketer.get("/ui/segments/active")
    assert page.status_code == 200 and "This segment failed in the last run" in _text(page)
    assert "within_days" in _text(page)


def test_the_overlap_without_a_run_says_so(as_marketer):
    """Before the first run the overlap page explains itself."""
    page = _text(as_marketer.get("/ui/segments/overlap"))
    assert "No segment run yet" in page and "how many persons are in both" in page


def test_the_overlap_heat_map(world, as_viewer, config):
    """Every pair of the last run's segments: the persons in both and their share of the
    row's members, with a sentence for each cell; kept for the run after."""
    page = _text(as_viewer.get("/ui/segments/overlap"))
    both = world["second"].members["known"]  # every high-tier person is active this month?
    assert page.count('class="cell') == 4 and page.count('class="cell self"') == 2
    assert f"of the {both} members of Known by email are also in" in page
    kept = overlaps.cached_overlap(config, world["second"].run_id)
    assert kept is not None and kept["segments"] == ["active", "known"]


def test_a_large_overlap_is_counted_aside(world, as_marketer, config, monkeypatch):
    """A run too large to count while the page waits: the page says it is counted and
    asks again; the table comes once the count is kept."""
    monkeypatch.setattr(segmentoverlap, "INLINE_MEMBERS", 0)
    page = _text(as_marketer.get("/ui/segments/overlap"))
    assert "is being counted" in page and 'hx-get="/ui/segments/overlap/table"' in page
    run_id = world["second"].run_id
    deadline = time.monotonic() + 30
    while overlaps.cached_overlap(config, run_id) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    while overlaps.counting(config, run_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    table = _text(as_marketer.get("/ui/segments/overlap/table"))
    assert 'class="heat"' in table and "<html" not in table


@pytest.mark.parametrize("language", ["en", "de"])
def test_the_fast_numbers_are_the_filters_numbers(app, language):
    """The heat map's quick whole numbers read exactly as the number filter's."""
    with app.test_request_context("/ui/segments/", headers={"Accept-Language": language}):
        fmt = PageFormats()
        for n in (0, 1, 999, 1000, 12_345, 1_000_000, 123_456_789, -4321):
            assert fmt.number(n) == i18n.number(n)
        assert fmt.whole_percent(0.5) == i18n.percent(0.5, 0)
        assert fmt.when(1_795_968_921_108) == i18n.when(1_795_968_921_108)
