"""The overview page: pyramid, funnel, touchpoints, topics, runs and syncs from real data,
every number a link to its persons, empty states, German numbers, roles."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from dmp.matrix import snapshots, summary
from dmp.membership import runs
from dmp.people import lifecycle
from dmp.people.identity import Identifier, IdKind
from dmp.people.profiles import find_person
from dmp.records import Stage
from dmp.storage import keyspace
from exporters import export, settings
from segments.scoring import DAY_MS
from tests.factories import apply_segments, make_hit, send_hits

NONE = {"analytics": False, "ads": False, "email": False}
SEGMENTS = """
- id: known
  name: Known persons
  where: {tier: {gte: medium}}
- id: everyone
  name: Everyone we may show ads to
  where: {tier: {gte: low}}
"""


def visit(uid: str, at: int, **fields):
    """Return a consented page view by cookie ``uid`` at ``at`` (ms)."""
    return make_hit(uid=uid, timestamp=at, received_at=at, **fields)


def identify(uid: str, at: int, **traits):
    """Return a trusted identify of cookie ``uid`` with ``traits`` at ``at`` (ms)."""
    return make_hit(
        source="api",
        type="identify",
        event="identify",
        uid=uid,
        user_id=f"user-{uid}",
        consent={"ads": True, "email": True},
        traits=traits,
        topics=[],
        trusted=True,
        timestamp=at,
        received_at=at,
    )


@pytest.fixture
def world(redis, config, drain, tmp_path: Path) -> dict:
    """Ingest three persons (low, medium, high) and two unconsented hits through the
    worker, record an SQL stage, build the matrix and run two segments, and sync one
    file destination; return the medium person's id."""
    now = int(time.time() * 1000)
    day = now - 2 * DAY_MS
    send_hits(
        redis,
        visit("c-low", day, topics=["crm"]),
        visit("c-anna", day - DAY_MS, topics=["crm", "marketing-automation"]),
        identify("c-anna", day, email="anna@acme.de"),
        visit("c-anna", day, channel="email", event="open", type="track", topics=["webinar"]),
        identify("c-carl", day, email="carl@acme.de", phone="+49 30 1234567"),
        visit("c-carl", day, topics=["crm"]),
        visit("", day, consent=NONE),
        visit("", day, consent=NONE, url="https://acme.de/preise"),
    )
    drain()
    carl = find_person(redis, Identifier(IdKind.EMAIL, "carl@acme.de"))
    lifecycle.record_stage(redis, carl, Stage.SQL, source="crm", at_ms=day)
    apply_segments(redis, SEGMENTS)
    runs.run(redis, config)
    found = settings.validate(redis, "files", "file", ["known"], 900, {"folder": str(tmp_path)})
    settings.save(redis, found)
    export.run(redis, config, "files")
    return {"anna": find_person(redis, Identifier(IdKind.EMAIL, "anna@acme.de")), "carl": carl}


def page(session, language: str = "en") -> str:
    """Return the overview's HTML in ``language`` (200 expected)."""
    res = session.get("/ui/", headers={"Accept-Language": language})
    assert res.status_code == 200, res.get_data(as_text=True)[:500]
    return res.get_data(as_text=True)


def linked(html: str, href: str) -> str:
    """Return the text of the (first) link to ``href`` in ``html``."""
    found = re.search(rf'<a href="{re.escape(href)}"[^>]*>([^<]*)</a>', html)
    assert found, f"no link to {href}"
    return found.group(1)


def test_the_pyramid_counts_tiers_and_links_each_to_its_persons(as_marketer, world) -> None:
    """Each tier's count links to the persons of that tier; unknown hits are counted but
    lead nowhere (nobody is behind them)."""
    html = page(as_marketer)
    for tier in ("low", "medium", "high"):
        assert linked(html, f"/ui/persons/?tier={tier}") == "1"
    assert 'aria-label="Involvement pyramid from unknown to high; the counts are in' in html
    unknown = re.search(
        r"unknown\s*<span class=\"hint\">hits</span></th>\s*<td[^>]*>(\w+)</td>", html
    )
    assert unknown and unknown.group(1) == "2"


def test_the_funnel_shows_stages_conversion_and_days(as_marketer, world, config) -> None:
    """The funnel links every stage's persons, shows the build's conversion rates and
    median days, and draws the path lead → won."""
    funnel = snapshots.latest_funnel(config)
    html = page(as_marketer)
    assert linked(html, "/ui/persons/?stage=lead") == "2"
    assert linked(html, "/ui/persons/?stage=sql") == "1"
    to_mql = next(c for c in funnel["conversion"] if c["from"] == "lead")
    assert to_mql["rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert "33.3%" in html  # lead → mql: carl went straight to sql, passing mql
    assert (
        'aria-label="Funnel, persons who reached each stage: Lead 3, MQL 1, SAL 1, SQL 1, Won 0"'
        in html
    )


def test_touchpoints_per_channel_and_topics_come_from_the_build(as_marketer, world, config) -> None:
    """The chart and table count the identified touchpoints of the last 30 days per
    channel, the topics table counts them per topic; both link to persons."""
    html = page(as_marketer)
    assert linked(html, "/ui/persons/?touched=web") == "5"  # with the two identifies
    assert linked(html, "/ui/persons/?touched=email") == "1"
    assert "/ui/persons/?touched=server" not in html  # identifies are on the web channel
    assert linked(html, "/ui/persons/?interest=crm") == "crm"
    assert re.search(r'interest=crm" aria-label="3 touchpoints on crm">3<', html)
    assert "marketing-automation" in html and "webinar" in html
    kept = summary.summary_path(snapshots.latest_snapshot(config))
    assert json.loads(kept.read_text())["touchpoints"] == 6


def test_runs_and_syncs_link_to_their_pages(as_marketer, world) -> None:
    """The latest run's segments link to their page and their members; the sync links to
    its destination with its counts."""
    html = page(as_marketer)
    assert linked(html, "/ui/segments/known") == "Known persons"
    assert linked(html, "/ui/persons/?segment=known") == "2"
    assert linked(html, "/ui/persons/?segment=everyone") == "3"
    assert re.search(r'<a class="name destination" href="/ui/destinations/files">files</a>', html)
    counts = re.findall(r'<a href="/ui/destinations/files"[^>]*>([^<]+)</a>', html)
    assert counts == ["2 added", "0 removed", "0 failed"]  # anna and carl, with ads consent


def test_numbers_and_words_are_german_on_a_german_page(as_marketer, redis, world) -> None:
    """A German page writes 1.000.000 and German headings; a million persons fit."""
    redis.hset(keyspace.STATS, "persons:low", 1_000_000)
    redis.hset(keyspace.partition(0).stats, "events_aggregate", 1234)  # as the worker counts
    html = page(as_marketer, "de")
    assert linked(html, "/ui/persons/?tier=low") == "1.000.000"
    assert ">1.234</td>" in html
    assert "Übersicht" in html and "Tage (Median)" in html and "Kontaktpunkte pro Tag" in html
    assert "33,3" in html


def test_a_fresh_installation_says_what_to_do_next(as_viewer) -> None:
    """Without data, build, runs or destinations every card says what comes next."""
    html = page(as_viewer)
    for text in (
        "No visitors yet.",
        "No matrix built yet.",
        "Touchpoints show here after the first matrix build.",
        "No segment run yet.",
        "No destination yet.",
    ):
        assert text in html
    assert "<svg" not in html and 'href="/ui/sites/"' in html


def test_a_destination_not_synced_yet_says_so(as_marketer, redis) -> None:
    """A destination without a report yet is no empty installation."""
    apply_segments(redis, SEGMENTS)
    settings.save(redis, settings.validate(redis, "news", "file", ["known"], 900, {"folder": "/x"}))
    assert "No sync yet" in page(as_marketer)


def test_the_overview_needs_a_login(client) -> None:
    """Without a session the page is a redirect to the login."""
    res = client.get("/ui/")
    assert res.status_code == 303 and "/ui/login" in res.headers["Location"]


def test_a_big_count_is_made_on_a_thread_while_the_last_summary_stands_in(
    world, redis, config
) -> None:
    """When more new event files than the page may wait for arrive, the newest earlier
    summary is answered (stale) and the new one counted on a thread."""
    first = summary.latest_summary(config)
    assert first and first["touchpoints"] == 6
    for path in snapshots.matrix_dir(config).glob("*.tally.json"):
        path.unlink()  # as if the log were compacted: every file is new to the next build
    runs.run(redis, config, full=True)  # a new build
    stale = summary.latest_summary(config, inline_bytes=0)
    assert stale and stale.get("stale") and stale["snapshot"] == first["snapshot"]
    summary.wait_for_counts(30)
    fresh = summary.latest_summary(config)
    assert fresh and not fresh.get("stale") and fresh["snapshot"] != first["snapshot"]
    assert fresh["touchpoints"] == 6
