"""The touchpoint matrix from frames: scores, stages, channels, interests, next content."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from segments.content import next_content, parse_catalog
from segments.matrix import (
    PERSON_SCHEMA,
    TOUCHPOINT_SCHEMA,
    build_matrix,
    finish_matrix,
    refresh_matrix,
)
from segments.personkey import all_keyed
from segments.personstate import decay_scale, person_state
from segments.rules import RuleError
from segments.scoring import DAY_MS, parse_model
from segments.stages import STAGE_HISTORY_SCHEMA, current_stages
from tests.factories import MATRIX_NOW, build_rows, profile_row, touch_row

MODEL = parse_model(
    """
fit:
  - {name: marketer, when: {trait: job_title, matches: "(?i)marketing"}, points: 40}
activity:
  half_life_days: 30
  rules:
    - {name: download, when: {event: whitepaper_download}, points: 30}
    - {name: page view, when: {event: page}, points: 1}
stages:
  mql: {score_gte: 60, tier_gte: medium}
  recycle_after_days: 90
"""
)
CATALOG = parse_catalog(
    """
- {id: crm-guide, title: CRM guide, url: "https://acme.de/crm-guide", topics: [crm],
   stage: [lead, mql]}
- {id: crm-pricing, title: Pricing, url: "https://acme.de/pricing/", topics: [crm], stage: mql}
- {id: intro, title: What Acme does, url: "https://acme.de/intro", stage: lead}
"""
)


def build(persons, touches, history=(), as_of=MATRIX_NOW) -> tuple[dict, pl.DataFrame]:
    """Return the rows and stage changes of a build with this module's model and catalog."""
    return build_rows(MODEL, persons, touches, history, CATALOG, as_of)


def test_score_is_fit_plus_decayed_activity_and_explained():
    """score = fit + activity, and the breakdown names each rule's points, biggest first."""
    rows, _ = build(
        [profile_row("a", job_title="Head of Marketing")],
        [touch_row("a", 30, "whitepaper_download"), touch_row("a", 0), touch_row("a", 0)],
    )
    a = rows["a"]
    assert (a["fit_score"], a["activity_score"], a["score"]) == (40.0, 17.0, 57.0)
    assert a["score_breakdown"] == [
        {"rule": "marketer", "points": 40.0},
        {"rule": "download", "points": 15.0},
        {"rule": "page view", "points": 2.0},
    ]
    assert a["job_title"] == "Head of Marketing"


def test_counts_windows_channels_and_recency():
    """Counts per window and channel, first and last touch, the last channel."""
    rows, _ = build(
        [profile_row("a", first_days=400)],
        [
            touch_row("a", 1),
            touch_row("a", 10, channel="email", event="click"),
            touch_row("a", 60),
            touch_row("a", 200),
            touch_row("a", -2),  # after the as-of time: not counted
        ],
    )
    a = rows["a"]
    counts = [a[f"touchpoints_{n}"] for n in ("total", "7d", "30d", "90d")]
    assert counts == [4, 1, 2, 3]
    assert a["touchpoints_by_channel"] == [
        {"channel": "email", "count": 1},
        {"channel": "web", "count": 3},
    ]
    assert a["first_seen"] == MATRIX_NOW - 400 * DAY_MS and a["last_seen"] == MATRIX_NOW - DAY_MS
    assert a["days_since_last_touch"] == 1.0 and a["last_channel"] == "web"


def test_the_last_channel_of_touchpoints_at_one_time_is_the_first_by_name():
    """Of several last touchpoints at the same time, the channel first by name: whatever
    order they were stored in (a full and an incremental build read them differently)."""
    for channels in (["web", "email", "crm"], ["crm", "web", "email"]):
        touches = [touch_row("a", 5, channel="web")]
        touches += [touch_row("a", 1, channel=c) for c in channels]
        touches += [touch_row("b", 2, channel="email"), touch_row("b", 1, channel="web")]
        rows, _ = build([profile_row("a"), profile_row("b")], touches)
        assert (rows["a"]["last_channel"], rows["b"]["last_channel"]) == ("crm", "web")


def test_interests_are_decayed_shares_with_a_top_interest():
    """Topic weights decay like activity and add up to one."""
    rows, _ = build(
        [profile_row("a")],
        [touch_row("a", 0, topics=["crm"]), touch_row("a", 30, topics=["crm", "ads"])],
    )
    total = 1 + 0.5 + 0.5
    assert rows["a"]["interests"] == [
        {"topic": "crm", "weight": round(1.5 / total, 4)},
        {"topic": "ads", "weight": round(0.5 / total, 4)},
    ]
    assert rows["a"]["top_interest"] == "crm"


def test_interests_are_largest_first_and_equal_shares_by_topic():
    """Each person's interests are ordered by share, largest first, equal shares by topic
    name; the top interest is the first of them (many persons: one sort orders them all)."""
    persons = [profile_row(f"p{i}") for i in range(40)]
    touches = [
        touch_row(f"p{i}", 1, topics=topics)
        for i in range(40)
        for topics in (["zeta", "alpha", "mid"], ["mid"] if i % 2 else ["zeta"])
    ]
    rows, _ = build(persons, touches)
    for i in range(40):
        row = rows[f"p{i}"]
        big = "mid" if i % 2 else "zeta"
        expected = [big, *sorted({"zeta", "alpha", "mid"} - {big})]
        assert [x["topic"] for x in row["interests"]] == expected
        assert row["interests"][1]["weight"] == row["interests"][2]["weight"] == 0.25
        assert row["top_interest"] == big


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"consents": ("analytics", "ads", "email")}, ["retargeting", "email"]),
        ({"consents": ("analytics", "email"), "email": None}, []),
        ({"consents": ("email",), "email_status": "bounced"}, []),
        ({"contact": ("phone", "address", "crm")}, ["phone", "postal"]),
    ],
)
def test_channels_need_consent_and_a_way_to_reach(kwargs, expected):
    """Retargeting needs ads consent; email an address, email consent and no bounce."""
    rows, _ = build([profile_row("a", **kwargs)], [])
    assert rows["a"]["channels"] == expected


def test_model_makes_mqls_and_records_when():
    """A qualifying score and tier make an MQL (recorded at the as-of time); low tier waits."""
    hot = [touch_row(p, 0, "whitepaper_download") for p in ("a", "b")]
    persons = [
        profile_row("a", job_title="marketing"),
        profile_row("b", "low", job_title="marketing"),
    ]
    rows, changes = build(persons, hot)
    assert rows["a"]["stage"] == "mql" and rows["a"]["stage_since"] == MATRIX_NOW
    assert rows["b"]["stage"] == "lead" and rows["b"]["stage_since"] == persons[1]["first_seen"]
    assert changes.rows() == [("a", "mql", MATRIX_NOW, "model")]
    # The next build reads that record back: no new change, the same since.
    rows, changes = build(persons, hot, changes.rows(named=True), as_of=MATRIX_NOW + DAY_MS)
    assert rows["a"]["stage_since"] == MATRIX_NOW and changes.is_empty()


def test_cold_mqls_are_recycled_and_sales_stages_stand():
    """An MQL below the threshold with no touch for 90 days is recycled; sal is kept."""
    history = [
        {"person_id": "a", "stage": "mql", "at": MATRIX_NOW - 200 * DAY_MS, "source": "model"},
        {"person_id": "b", "stage": "mql", "at": MATRIX_NOW - 200 * DAY_MS, "source": "model"},
        {"person_id": "c", "stage": "sal", "at": MATRIX_NOW - 100 * DAY_MS, "source": "crm"},
        {"person_id": "d", "stage": "mql", "at": MATRIX_NOW - 200 * DAY_MS, "source": "model"},
    ]
    rows, changes = build(
        [profile_row(p, first_days=300) for p in "abcd"],
        [touch_row("a", 91), touch_row("b", 89), touch_row("c", 95)],
        history,
    )
    stages = {p: rows[p]["stage"] for p in "abcd"}
    assert stages == {"a": "recycled", "b": "mql", "c": "sal", "d": "recycled"}
    assert sorted(changes["person_id"]) == ["a", "d"]
    assert rows["c"]["stage_since"] == MATRIX_NOW - 100 * DAY_MS


def test_next_content_fits_stage_and_interest_and_is_unseen():
    """The first catalog item for the stage and top interest not yet seen; else general."""
    rows, _ = build(
        [profile_row("a", job_title="marketing"), profile_row("b"), profile_row("c")],
        [
            touch_row("a", 0, "whitepaper_download", topics=["crm"]),
            touch_row("a", 1, url="https://ACME.de/crm-guide/?utm=x", topics=["crm"]),
            touch_row("b", 1, topics=["seo"]),
        ],
    )
    assert rows["a"]["stage"] == "mql" and rows["a"]["next_content"] == "crm-pricing"
    assert rows["b"]["next_content"] == "intro"  # no crm interest: general content
    assert rows["c"]["next_content_url"] == "https://acme.de/intro"


def test_a_page_is_seen_whatever_the_case_of_its_url_non_ascii_letters_included():
    """A touchpoint's URL is a catalog page when its page key (lower case, no scheme,
    query or final slash) is the item's: capitals outside ASCII count as their small
    letters (the Kelvin sign as a k), and a URL merely holding the key is another page."""
    items = parse_catalog(
        """
- {id: kontakt, title: Kontakt, url: 'https://acme.de/kontakt', stage: lead}
- {id: ueber, title: Über uns, url: 'https://acme.de/über-uns', stage: lead}
- {id: intro, title: Intro, url: 'https://acme.de/intro', stage: lead}
"""
    )
    persons = [profile_row(p, first_days=10) for p in ("upper", "longer", "kelvin")]
    touches = [
        touch_row("upper", 1, url="https://ACME.DE/ÜBER-UNS/?x=1"),
        touch_row("upper", 1, url="HTTPS://Acme.de/KONTAKT#top"),
        touch_row("longer", 1, url="https://acme.de/über-uns-und-mehr"),
        touch_row("kelvin", 1, url="https://acme.de/\u212aontakt"),
    ]
    rows, _ = build_rows(MODEL, persons, touches, catalog=items)
    assert rows["upper"]["next_content"] == "intro"
    assert rows["longer"]["next_content"] == "kontakt"
    assert rows["kelvin"]["next_content"] == "ueber"


def test_next_content_prefers_the_top_interest_then_catalog_order_then_general():
    """On the top interest before general content, whatever the catalog order; within
    each, the catalog's order; seen pages skipped; nothing for a stage no item is for."""
    items = parse_catalog(
        """
- {id: general-1, title: G1, url: 'https://acme.de/g1', stage: [lead, mql]}
- {id: crm-1, title: C1, url: 'https://acme.de/c1', topics: [crm], stage: [lead, mql]}
- {id: general-2, title: G2, url: 'https://acme.de/g2', stage: lead}
- {id: crm-2, title: C2, url: 'https://acme.de/c2/', topics: [crm], stage: lead}
"""
    )
    persons = pl.LazyFrame(
        {
            "person_id": ["fresh", "read-c1", "read-crm", "read-all", "won", "no-topic"],
            "stage": ["lead", "lead", "lead", "lead", "won", "mql"],
            "top_interest": ["crm", "crm", "crm", "crm", "crm", None],
        }
    )
    seen = pl.LazyFrame(
        {
            "person_id": ["read-c1", "read-crm", "read-crm", *["read-all"] * 4, "no-topic"],
            "page": [
                "acme.de/c1",
                "acme.de/c1",
                "acme.de/c2",
                *("acme.de/c1", "acme.de/c2", "acme.de/g1", "acme.de/g2"),
                "acme.de/g1",
            ],
        }
    )
    got = next_content(persons, seen, items).collect()
    assert dict(zip(got["person_id"], got["next_content"], strict=True)) == {
        "fresh": "crm-1",
        "read-c1": "crm-2",
        "read-crm": "general-1",
        # read-all has seen all for a lead, no-topic the one general item for an mql,
        # and no item is for won: no row for them
    }
    row = got.filter(pl.col("person_id") == "read-c1").row(0, named=True)
    assert (row["next_content_title"], row["next_content_url"]) == ("C2", "https://acme.de/c2/")
    none = next_content(persons, seen, ()).collect()
    assert none.height == 0 and none.schema == {"person_id": pl.Utf8} | dict.fromkeys(
        ("next_content", "next_content_title", "next_content_url"), pl.Utf8
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- {id: a, title: A, url: ftp://x}", "content[0].url: expected an http(s) URL"),
        ("- {id: a, title: A, url: 'https://x', stage: hot}", "content[0].stage: unknown stage"),
        ("- {id: 'a b', title: A, url: 'https://x'}", "content[0].id: expected an id"),
        (
            "- {id: a, title: A, url: 'https://x'}\n- {id: a, title: B, url: 'https://y'}",
            "content[1].id: 'a' appears twice",
        ),
        ("{}", "catalog: expected a list"),
    ],
)
def test_bad_catalogs_name_the_path(text, message):
    """A catalog item that cannot be used is refused with where and why."""
    with pytest.raises(RuleError) as caught:
        parse_catalog(text)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    "ids", [("a", "b", "c"), ("00000000000000ff", "0000000000000a00", "f000000000000000")]
)
def test_rows_refreshed_to_a_later_time_are_the_rows_a_build_then_makes(ids):
    """refresh_matrix (an incremental build's persons without news) equals finishing the
    same state later: decayed scores, windows, recycled stages, and next content anew
    where the stage moved; whatever the order the state comes in (put in the rows'
    order by the ids' text, or by their keys for dmp's ids)."""
    a, b, c = ids
    persons = pl.LazyFrame(
        [profile_row(a, job_title="Head of Marketing"), profile_row(b), profile_row(c)],
        schema=PERSON_SCHEMA,
    )
    touches = pl.LazyFrame(
        [
            touch_row(a, 10, "whitepaper_download", topics=["crm"]),
            touch_row(a, 12, url="https://acme.de/crm-guide", topics=["crm"]),
            touch_row(b, 5),
            touch_row(b, 20),
        ],
        schema=TOUCHPOINT_SCHEMA,
    )
    later = MATRIX_NOW + 100 * DAY_MS
    scale = decay_scale(MODEL, MATRIX_NOW)
    assert decay_scale(MODEL, later) == scale
    state = person_state(persons, touches, MODEL, CATALOG, MATRIX_NOW, scale).collect()
    none = current_stages(pl.LazyFrame(schema=STAGE_HISTORY_SCHEMA), MATRIX_NOW)
    then, moves = finish_matrix(state.lazy(), none, MODEL, CATALOG, MATRIX_NOW)
    then, moves = then.collect(), moves.collect()
    first = then.row(0, named=True)
    assert (first["stage"], first["next_content"], then["touchpoints_7d"][1]) == (
        "mql",
        "crm-pricing",
        1,
    )
    recorded = current_stages(moves.lazy(), later)
    expected, expected_moves = finish_matrix(state.lazy(), recorded, MODEL, CATALOG, later)

    shuffled = state.reverse().lazy()
    rows, changes = refresh_matrix(then.lazy(), shuffled, recorded, MODEL, CATALOG, later)

    assert_frame_equal(rows, expected.collect())
    assert_frame_equal(changes, expected_moves.collect())
    first = rows.row(0, named=True)
    assert (first["stage"], first["next_content"], rows["touchpoints_7d"][1]) == (
        "recycled",
        None,
        0,
    )
    assert changes.rows() == [(a, "recycled", later, "model")]


def test_dmp_ids_are_folded_by_their_number_into_the_rows_other_ids_get():
    """Persons whose ids are all dmp's (16 hex digits) are folded by the ids' numbers,
    others by their row numbers: the same rows either way, and in both the touchpoints
    of no person (an unknown dmp id, an id of another shape) count for nobody."""
    capped = parse_model(
        """
activity:
  half_life_days: 30
  rules:
    - {name: page view, when: {event: page}, points: 2, max_per_day: 2}
    - {name: download, when: {event: whitepaper_download}, points: 30}
"""
    )
    plain = ["a", "b", "c", "d"]
    dmp = ["00000000000000ff", "8000000000000000", "ffffffffffffffff", "0123456789abcdef"]
    stray = ["0000000000000001", "p1"]  # a dmp id of no person; an id of another shape

    def rows_of(ids: list[str]) -> pl.DataFrame:
        persons = [profile_row(p, first_days=50) for p in ids[:4]]
        touches = [
            touch_row(p, days, event, url, topics, channel)
            for p in ids
            for days, event, url, topics, channel in (
                (1, "page", "https://acme.de/crm-guide", ["crm"], "web"),
                (1.1, "page", None, ["crm", "ads"], "web"),
                (1.2, "page", None, [], "web"),
                (3, "whitepaper_download", None, ["ads"], "email"),
            )
        ] + [touch_row(ids[1], 2, "click", channel="email")]
        matrix, _ = build_matrix(
            pl.LazyFrame(persons, schema=PERSON_SCHEMA),
            pl.LazyFrame(touches, schema=TOUCHPOINT_SCHEMA),
            pl.LazyFrame([], schema=STAGE_HISTORY_SCHEMA),
            capped,
            CATALOG,
            MATRIX_NOW,
        )
        rows = matrix.collect()
        assert rows["person_id"].to_list() == sorted(ids[:4])  # by key or by text alike
        named = dict(zip(ids, plain + ["stray"] * 2, strict=True))
        return rows.with_columns(pl.col("person_id").replace_strict(named)).sort("person_id")

    assert all_keyed(pl.LazyFrame({"person_id": dmp}))
    assert not all_keyed(pl.LazyFrame({"person_id": plain}))
    by_number, by_row = rows_of([*dmp, *stray]), rows_of([*plain, "e", "f"])

    assert_frame_equal(by_number, by_row)
    assert by_number["person_id"].to_list() == plain
    assert by_number["touchpoints_total"].to_list() == [4, 5, 4, 4]
    first = by_number.row(0, named=True)
    assert first["touchpoints_by_channel"] == [
        {"channel": "email", "count": 1},
        {"channel": "web", "count": 3},
    ]
    assert [i["topic"] for i in first["interests"]] == ["crm", "ads"]


def test_refresh_refuses_rows_of_other_persons():
    """Rows and a state of different persons are a caller's mistake, not a silent mix."""
    persons = pl.LazyFrame([profile_row("a"), profile_row("b")], schema=PERSON_SCHEMA)
    touches = pl.LazyFrame([], schema=TOUCHPOINT_SCHEMA)
    state = person_state(persons, touches, MODEL, CATALOG, MATRIX_NOW, 0.0)
    none = current_stages(pl.LazyFrame(schema=STAGE_HISTORY_SCHEMA), MATRIX_NOW)
    rows, _ = finish_matrix(state, none, MODEL, (), MATRIX_NOW)
    with pytest.raises(ValueError, match="different persons"):
        refresh_matrix(rows.head(1), state, none, MODEL, (), MATRIX_NOW)
