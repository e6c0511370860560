"""The persons pages: search, the list behind a number, one person whole; bad input,
roles and empty states, on real data sent through the worker, imports and a run."""

from __future__ import annotations

import pytest

from dmp.cli import cli
from dmp.matrix import roster as roster_module
from dmp.membership import runs
from dmp.people.identity import Identifier, IdKind
from dmp.people.profiles import find_person
from dmp.storage import keyspace
from tests.factories import NOW, apply_segments, make_hit, make_identify, send_hits

HOSTILE = '<script>alert("x")</script><b>Preise</b>'
CRM_CSV = "email;crm_id;company;job_title;stage\nanna@acme.de;C-1;Acme GmbH;CMO;SQL\n"
NEWSLETTER_CSV = (
    "email,event,time,campaign,topic,url\n"
    "anna@acme.de,sent,2026-09-10T08:00:00Z,Sept,crm,\n"
    "anna@acme.de,click,2026-09-10T09:01:00Z,Sept,crm,https://acme.de/crm-guide\n"
)
SEGMENTS = """
- id: known
  name: Known by email
  where: {tier: {gte: medium}}
- id: later
  name: Not run yet
  where: {tier: high}
"""


@pytest.fixture
def anna(redis, drain, runner, config, tmp_path) -> str:
    """Return the id of Anna (see make_anna)."""
    return make_anna(redis, drain, runner, config, tmp_path)


def make_anna(redis, drain, runner, config, tmp_path) -> str:
    """Return the id of a person with a cookie, an identify, consents given and withdrawn,
    pixel, CRM and newsletter touchpoints, a matrix build and a segment run."""
    pages = [
        make_hit(uid="c-anna", url=f"https://acme.de/p{i}", timestamp=NOW + 1000 * i)
        for i in range(3)
    ]
    pages.append(make_hit(uid="c-anna", title=HOSTILE, timestamp=NOW + 5000))
    identify = make_identify("anna@acme.de", uid="c-anna", firstName="Anna")
    withdrawn = make_hit(
        uid="c-anna", timestamp=NOW + 9000, consent={"analytics": True, "ads": False}
    )
    send_hits(redis, *pages, identify, withdrawn)
    drain()
    (tmp_path / "crm.csv").write_text(CRM_CSV, encoding="utf-8")
    (tmp_path / "nl.csv").write_text(NEWSLETTER_CSV, encoding="utf-8")
    for kind, name in (("crm", "crm.csv"), ("newsletter", "nl.csv")):
        result = runner.invoke(cli, ["import", kind, str(tmp_path / name)])
        assert result.exit_code == 0, result.output
    apply_segments(redis, SEGMENTS.replace("- id: later", "- id: known2"))
    runs.run(redis, config, full=True)
    apply_segments(redis, SEGMENTS)  # 'later' is defined after the run
    pid = find_person(redis, Identifier(IdKind.EMAIL, "anna@acme.de"))
    assert pid is not None
    return pid


@pytest.mark.parametrize("query", ["Anna@ACME.de", " c-anna ", "C-1", "{pid}"])
def test_a_search_by_any_identifier_leads_to_the_person(as_marketer, anna, query) -> None:
    """An email (any case), a cookie id, a CRM id or the person id finds the person."""
    res = as_marketer.get("/ui/persons/", query_string={"q": query.format(pid=anna)})
    assert res.status_code == 303 and res.headers["Location"] == f"/ui/persons/{anna}"


def test_a_search_that_matches_nothing_says_so(as_marketer, anna) -> None:
    """Nobody found: the page says so, and shows no person."""
    res = as_marketer.get("/ui/persons/", query_string={"q": "nobody@acme.de"})
    page = res.get_data(as_text=True)
    assert res.status_code == 200 and "No person has this" in page
    assert anna not in page and "anna@acme.de" not in page


def test_the_person_page_shows_every_section(as_marketer, anna) -> None:
    """Identifiers, consents with history, stages, score rules, interests, segments and
    the timeline across pixel, CRM and newsletter; a hostile page title is escaped."""
    res = as_marketer.get(f"/ui/persons/{anna}")
    page = res.get_data(as_text=True)
    assert res.status_code == 200
    for text in ("anna@acme.de", "c-anna", "C-1", "Withdrawn", "Given", "SQL", "Known by email"):
        assert text in page, text
    for heading in ("Identifiers", "Consents", "Tier and stage", "Lead score", "Interests"):
        assert f">{heading}</h2>" in page, heading
    assert "Next content" in page and "Timeline" in page and "page view" in page
    assert "Newsletter tool" in page and "Pixel" in page and "CRM" in page
    assert "&lt;script&gt;alert" in page and '<script>alert("x")' not in page


def test_the_persons_seen_on_a_touchpoint_channel(as_marketer, anna) -> None:
    """``?touched=`` lists the persons with touchpoints on that channel (the overview's
    touchpoints-per-channel figures link here); a channel nobody used lists nobody."""
    page = as_marketer.get("/ui/persons/?touched=crm").get_data(as_text=True)
    assert f"/ui/persons/{anna}" in page and "Touchpoints on" in page
    page = as_marketer.get("/ui/persons/?touched=fax").get_data(as_text=True)
    assert "Nobody matches these filters" in page
    assert as_marketer.get("/ui/persons/?touched=%3Cb%3E").status_code == 400


def test_the_person_page_shows_the_tier_history(as_marketer, anna) -> None:
    """Every promotion the worker recorded (from low to medium to high) is listed."""
    page = as_marketer.get(f"/ui/persons/{anna}").get_data(as_text=True)
    history = page.split(">Tier history</h3>", 1)[1].split("</table>", 1)[0]
    assert history.count("<tr>") >= 2  # the head and at least one promotion
    assert "High" in history or "high" in history


def test_the_person_page_in_german(as_marketer, anna) -> None:
    """German browsers get German headings."""
    res = as_marketer.get(f"/ui/persons/{anna}", headers={"Accept-Language": "de"})
    page = res.get_data(as_text=True)
    assert "Einwilligungen" in page and "Zeitleiste" in page and "Widerrufen" in page


def test_a_viewer_reads_the_pages(as_viewer, anna) -> None:
    """Viewers may search, list and read a person."""
    assert as_viewer.get(f"/ui/persons/{anna}").status_code == 200
    assert as_viewer.get("/ui/persons/?tier=high").status_code == 200


def test_the_list_behind_a_number(as_marketer, anna) -> None:
    """Filters by tier, stage, segment and channel list the person with the total; a
    combination nobody matches says so."""
    for query in ("tier=high", "segment=known", "stage=sql&tier=high", ""):
        page = as_marketer.get(f"/ui/persons/?{query}").get_data(as_text=True)
        assert f"/ui/persons/{anna}" in page and "Matching persons" in page, query
    page = as_marketer.get("/ui/persons/?tier=low&segment=known").get_data(as_text=True)
    assert "Nobody matches these filters" in page and anna not in page
    page = as_marketer.get("/ui/persons/?segment=later").get_data(as_text=True)
    assert "has not been run yet" in page


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("tier=platinum", "tier must be one of"),
        ("stage=hot", "stage must be one of"),
        ("channel=fax", "channel must be one of"),
        ("page=0", "page must be a whole number"),
        ("page=" + "9" * 30, "page must be a whole number"),
        ("segment=Not%20An%20Id", "segment must be a segment id"),
        ("segment=no-such-segment", "There is no segment"),
        ("interest=" + "x" * 101, "interest must be a topic"),
        ("q=" + "x" * 321, "at most 320 characters"),
        ("q=%20", "Enter an email address"),
    ],
)
def test_bad_list_input_is_a_400_page(as_marketer, anna, query, message) -> None:
    """Unknown or oversized parameters answer 400 with the page and a clear message."""
    res = as_marketer.get(f"/ui/persons/?{query}")
    assert res.status_code == 400 and message in res.get_data(as_text=True)


def test_before_the_first_build_the_list_says_so(as_marketer, redis, drain) -> None:
    """No matrix yet: an empty state, not an error."""
    res = as_marketer.get("/ui/persons/?tier=high")
    assert res.status_code == 200 and "No matrix has been built yet" in res.get_data(as_text=True)


@pytest.mark.parametrize("pid", ["0123456789abcdef", "not-an-id", "x" * 300])
def test_an_unknown_person_is_a_friendly_404(as_marketer, redis, pid) -> None:
    """An unknown, erased or malformed id is a 404 page that says so."""
    res = as_marketer.get(f"/ui/persons/{pid}")
    assert res.status_code == 404 and "Person not found" in res.get_data(as_text=True)


def test_a_merged_id_leads_to_the_person_it_joined(as_marketer, redis, drain) -> None:
    """A person id merged into another redirects there."""
    send_hits(redis, make_hit(uid="c-old"), make_identify("bea@acme.de"))
    drain()
    old = find_person(redis, Identifier(IdKind.UID, "c-old"))
    send_hits(redis, make_identify("bea@acme.de", uid="c-old"))
    drain()
    live = find_person(redis, Identifier(IdKind.EMAIL, "bea@acme.de"))
    assert old and live and old != live
    res = as_marketer.get(f"/ui/persons/{old}")
    assert res.status_code == 303 and res.headers["Location"] == f"/ui/persons/{live}"


def test_long_values_and_a_long_timeline(as_marketer, redis, drain) -> None:
    """A 300-character id is found and shown whole; of over 60 touchpoints 50 show, with
    more on request, and the rest come as rows."""
    long_id = "a" * 290 + "@acme.de.x"
    hits = [make_hit(uid="c-long", timestamp=NOW + i) for i in range(60)]
    hits.append(
        make_hit(
            source="api",
            type="identify",
            event="identify",
            uid="c-long",
            user_id=long_id,
            consent={},
            trusted=True,
        )
    )
    send_hits(redis, *hits)
    drain()
    res = as_marketer.get("/ui/persons/", query_string={"q": long_id})
    assert res.status_code == 303
    page = as_marketer.get(res.headers["Location"]).get_data(as_text=True)
    assert long_id in page
    pid = res.headers["Location"].rsplit("/", 1)[1]
    total = redis.zcard(keyspace.person(pid, "touchpoints"))
    assert total > 60 and "Show more" in page and f"50 of {total} shown" in page
    more = as_marketer.get(res.headers["Location"] + "/timeline?offset=50").get_data(as_text=True)
    assert more.count("<tr>") == total - 50 and "Show more" not in more
    assert as_marketer.get(res.headers["Location"] + "/timeline?offset=x").status_code == 400


def test_a_big_build_loads_on_a_thread_while_the_last_one_answers(config, anna, redis) -> None:
    """Past inline_rows a new build's roster loads on a thread; the one before stands in."""
    first = roster_module.latest_roster(config)
    runs.run(redis, config, full=True)
    stale = roster_module.latest_roster(config, inline_rows=0)
    assert first is not None and stale is not None
    assert stale.stale and stale.snapshot == first.snapshot
    for thread in list(roster_module._LOADING.values()):
        thread.join(10)
    fresh = roster_module.latest_roster(config, inline_rows=0)
    assert fresh is not None and not fresh.stale and fresh.snapshot != first.snapshot
