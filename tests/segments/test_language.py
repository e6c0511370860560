"""The segment language: parsing with path-named errors, and evaluation over the matrix."""

from __future__ import annotations

import hashlib

import duckdb
import polars as pl
import pytest
import yaml
from polars.testing import assert_frame_equal

from segments.evaluator import evaluate, profile_of
from segments.language import parse_where
from segments.matrix import PERSON_SCHEMA, PROFILE_TRAITS, TOUCHPOINT_SCHEMA, build_matrix
from segments.rules import RuleError
from segments.scoring import default_model_text, parse_model
from segments.sql import segments_sql
from segments.stages import STAGE_HISTORY_SCHEMA
from tests.factories import MATRIX_NOW, MATRIX_SCHEMA, matrix_row, profile_row, touch_row
from tests.segments.cases import OUTSIDE_THE_ORDER, OUTSIDE_THE_ORDER_ROWS

EXAMPLE = yaml.safe_load(
    """
where:
  all:
    - tier: {gte: medium}
    - score: {gte: 50}
    - stage: {in: [mql, sal]}
    - interest: {topic: marketing-automation, gte: 0.2}
    - channel: email
    - did: {event: whitepaper_download, within_days: 30, count_gte: 1}
    - not: {did: {event: page, url_contains: /careers}}
    - any:
        - trait: {name: country, in: [DE, AT, CH]}
        - trait: {name: employees, gte: 200}
"""
)["where"]


def members(people: list[dict], touches: list[dict], where: dict) -> list[str]:
    """Return who is in the segment, checked to be the same persons when every id is
    one dmp would mint (counted by the ids' numbers: segments.personkey)."""
    found = _members(people, touches, where)
    dmp = {r["person_id"]: as_dmp_id(r["person_id"]) for r in [*people, *touches]}
    again = _members(
        [{**r, "person_id": dmp[r["person_id"]]} for r in people],
        [{**r, "person_id": dmp[r["person_id"]]} for r in touches],
        where,
    )
    assert again == sorted(dmp[p] for p in found)
    return found


def as_dmp_id(pid: str) -> str:
    """Return an id of dmp's shape (16 hex digits) standing for ``pid``."""
    return hashlib.sha256(pid.encode()).hexdigest()[:16]


def _members(people: list[dict], touches: list[dict], where: dict) -> list[str]:
    matrix = pl.LazyFrame(people, schema=MATRIX_SCHEMA)
    tps = pl.LazyFrame(touches, schema=TOUCHPOINT_SCHEMA)
    got = evaluate(matrix, tps, {"seg": parse_where(where)}, MATRIX_NOW).collect()
    return sorted(got.filter("seg")["person_id"].to_list())


def test_the_issue_example_selects_exactly_the_qualifying_person():
    """Each condition of the example excludes one person that fails only it."""
    people = [
        matrix_row("ok"),
        matrix_row("low", tier="low"),
        matrix_row("cold", score=20.0),
        matrix_row("sql", stage="sql"),
        matrix_row("other-topic", interests=[{"topic": "crm", "weight": 1.0}]),
        matrix_row("no-email", channels=["retargeting"]),
        matrix_row("no-download"),
        matrix_row("careers"),
        matrix_row("abroad", traits='{"country": "US", "employees": 40}'),
        matrix_row("big-abroad", traits='{"country": "US", "employees": 500}'),
    ]
    touches = [
        touch_row(p["person_id"], 3, "whitepaper_download")
        for p in people
        if p["person_id"] != "no-download"
    ]
    touches += [touch_row("no-download", 45, "whitepaper_download")]  # outside the window
    touches += [touch_row("careers", 1, url="https://acme.de/careers/jobs")]
    assert members(people, touches, EXAMPLE) == ["big-abroad", "ok"]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"tier": "medium"}, ["m"]),
        ({"tier": {"lt": "high"}}, ["l", "m"]),
        ({"stage": {"not_in": ["lead"]}}, ["h", "m"]),
        ({"not": {"channel": "email"}}, ["l"]),
        ({"did": {"event": "page", "count_gte": 2}}, ["h"]),
        ({"did": {"event": "page", "count_eq": 0}}, ["l", "m"]),
        ({"did": {"within_days": 2}}, ["h", "m"]),
        ({"top_interest": {"matches": "^mark"}}, ["h", "l", "m"]),
        ({"touchpoints_30d": {"gt": 2}}, ["h", "l", "m"]),
    ],
)
def test_conditions(where, expected):
    """Tiers and stages compare by order; did counts touchpoints in a window."""
    people = [
        matrix_row("l", tier="low", stage="lead", channels=[]),
        matrix_row("m", tier="medium", stage="mql"),
        matrix_row("h", tier="high", stage="sal"),
    ]
    touches = [touch_row("h", 1), touch_row("h", 5), touch_row("m", 1, "click", channel="email")]
    assert members(people, touches, where) == expected


@pytest.mark.parametrize(("where", "expected"), OUTSIDE_THE_ORDER)
def test_a_stage_or_tier_outside_the_order_is_in_no_list_and_in_no_complement(where, expected):
    """A hand-made matrix may hold a stage or tier that is not one of the order's, or
    none: like a missing value it meets neither ``in`` nor ``not_in``."""
    people = [matrix_row(p, **columns) for p, columns in OUTSIDE_THE_ORDER_ROWS.items()]
    assert members(people, [], where) == expected


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (
            {"all": [{"tier": "medium"}, {"score": {"gte": "fifty"}}]},
            "where.all[1].score.gte: expected a number",
        ),
        (
            {"all": [{"interest": {"topic": "x", "gte": 2}}]},
            "where.all[0].interest.gte: expected a number",
        ),
        ({"tier": {"gte": "gold"}}, "where.tier.gte: expected tiers out of"),
        ({"stage": {"in": ["mql", "hot"]}}, "where.stage.in: expected a list of stages"),
        ({"channel": "fax"}, "where.channel: expected one of"),
        ({"any": []}, "where.any: expected a non-empty list"),
        (
            {"did": {"event": "page", "within_days": -1}},
            "where.did.within_days: expected a positive",
        ),
        ({"did": {"evnt": "page"}}, "where.did.evnt: unknown key"),
        ({"not": {"scroe": {"gt": 1}}}, "where.not.scroe: unknown condition"),
        ({"score": {"gte": 1}, "tier": "low"}, "where: expected one condition"),
        ({"stage": {"in": "mql"}}, "where.stage.in: expected a list of stages"),
        ({"tier": {"gte": ["low"]}}, "where.tier.gte: expected tiers out of"),
        ({"country": {"matches": "("}}, "where.country.matches: not a regular expression"),
        (
            {"trait": {"name": "employees", "gte": 50, "lt": 500}},
            "where.trait: expected one operator",
        ),
    ],
)
def test_bad_definitions_name_the_path_and_the_problem(where, message):
    """A definition that cannot work is refused with where and why."""
    with pytest.raises(RuleError) as caught:
        parse_where(where)
    assert str(caught.value).startswith(message)


def test_all_segments_in_one_pass_share_did_counts():
    """Several segments evaluate together; equal did nodes are counted once."""
    people = [matrix_row("a"), matrix_row("b", tier="low")]
    touches = [touch_row("a", 1, "whitepaper_download")]
    did = {"did": {"event": "whitepaper_download", "within_days": 30}}
    segments = {"x": parse_where(did), "y": parse_where({"all": [did, {"tier": "low"}]})}
    got = evaluate(
        pl.LazyFrame(people, schema=MATRIX_SCHEMA),
        pl.LazyFrame(touches, schema=TOUCHPOINT_SCHEMA),
        segments,
        MATRIX_NOW,
    ).collect()
    assert got.sort("person_id").rows() == [("a", True, False), ("b", False, False)]


DEMO = {"event": "demo_request"}
DEMO_WITHIN_14 = {**DEMO, "within_days": 14}


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        # webinar, then a demo request within 14 days
        ({"did": {"event": "webinar_signup", "then": DEMO_WITHIN_14}}, ["quick"]),
        # ... with no limit on the gap
        ({"did": {"event": "webinar_signup", "then": DEMO}}, ["quick", "slow"]),
        # three steps: page, then webinar, then demo within 14 days of the webinar
        (
            {"did": {"event": "page", "then": {"event": "webinar_signup", "then": DEMO_WITHIN_14}}},
            ["quick"],
        ),
        # only sequences ending in the last 5 days
        ({"did": {"event": "webinar_signup", "within_days": 5, "then": DEMO}}, ["quick"]),
    ],
)
def test_then_sequences(where, expected):
    """A then B within N days: B must follow an A, within the gap."""
    people = [matrix_row(p) for p in ("quick", "slow", "wrong-order", "none")]
    touches = [
        touch_row("quick", 12, "page"),
        touch_row("quick", 10, "webinar_signup"),
        touch_row("quick", 2, "demo_request"),
        touch_row("slow", 60, "webinar_signup"),
        touch_row("slow", 20, "demo_request"),
        touch_row("wrong-order", 10, "demo_request"),
        touch_row("wrong-order", 5, "webinar_signup"),
    ]
    assert members(people, touches, where) == expected


def test_a_bad_then_names_its_path():
    """Errors inside a sequence name the step."""
    with pytest.raises(RuleError) as caught:
        parse_where({"did": {"event": "a", "then": {"event": "b", "within_days": 0}}})
    assert str(caught.value).startswith("where.did.then.within_days: expected a positive")


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ({"did": {"event": "page", "within_days": 1e400}}, "where.did.within_days: expected a"),
        ({"did": {"event": "page", "within_days": float("nan")}}, "where.did.within_days:"),
        ({"did": {"event": "page", "within_days": 3651}}, "where.did.within_days: expected a"),
        ({"did": {"event": "page", "within_days": 10**400}}, "where.did.within_days:"),
        ({"did": {"event": "page", "within_days": True}}, "where.did.within_days:"),
        (
            {"did": {"event": "a", "then": {"event": "b", "within_days": float("inf")}}},
            "where.did.then.within_days: expected a",
        ),
        ({"did": {"event": "page", "count_gte": 10**30}}, "where.did.count_gte: expected a whole"),
        ({"did": {"event": "page", "count_lt": 2.5}}, "where.did.count_lt: expected a whole"),
        ({"did": {"event": "page", "count_eq": False}}, "where.did.count_eq: expected a whole"),
        ({"all": [{"tier": "low"}, {"score": {"gte": 1e400}}]}, "where.all[1].score.gte:"),
        ({"score": {"lt": float("-inf")}}, "where.score.lt: expected a"),
        ({"score": {"eq": float("nan")}}, "where.score.eq: expected a"),
        ({"score": {"gte": 10**400}}, "where.score.gte: expected a"),
        ({"score": {"gte": True}}, "where.score.gte: expected a number"),
        ({"touchpoints_30d": {"in": [1, 10**400]}}, "where.touchpoints_30d.in[1]: expected a"),
        ({"score": {"in": ["hot"]}}, "where.score.in[0]: expected a number"),
        ({"score": {"contains": "1"}}, "where.score.contains: expected one of"),
        ({"score": {"exists": True}}, "where.score.exists: expected one of"),
        ({"days_since_last_touch": {"matches": "^1"}}, "where.days_since_last_touch.matches:"),
        ({"interest": {"topic": "x", "gte": float("nan")}}, "where.interest.gte: expected a"),
        ({"interest": {"topic": "x", "gte": True}}, "where.interest.gte: expected a"),
        ({"trait": {"name": "employees", "gte": 1e400}}, "where.trait.gte: expected a"),
        ({"trait": {"name": "employees", "eq": 1e16}}, "where.trait.eq: expected"),
        ({"trait": {"name": "employees", "in": [1, float("inf")]}}, "where.trait.in: expected"),
        ({"country": {"ne": float("nan")}}, "where.country.ne: expected"),
        ({"did": {"property": "size", "gt": 1e400}}, "where.did.property.gt: expected a"),
    ],
)
def test_numbers_out_of_range_are_refused(where, message):
    """Every number a definition holds is finite, within its documented range and of its
    kind (whole where counted, never true/false): else a RuleError naming the path, not a
    run that fails later (1e400 days made every run raise OverflowError)."""
    with pytest.raises(RuleError) as caught:
        parse_where(where)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    "where",
    [
        {"did": {"event": "page", "within_days": 3650, "count_gte": 1_000_000}},
        {"did": {"event": "page", "within_days": 0.5, "count_eq": 0}},
        {"score": {"gte": -1e15}},
        {"trait": {"name": "revenue", "gte": 10**15}},
        {"touchpoints_30d": {"in": [1, 2]}},
        {"interest": {"topic": "x", "gte": 1}},
    ],
)
def test_numbers_at_their_bounds_are_taken(where):
    """The bounds themselves are valid, and the tree evaluates."""
    members([matrix_row("a")], [touch_row("a", 1)], where)


PROFILE_TESTS = [
    {"trait": {"name": "country", "in": ["DE", "AT"]}},
    {"trait": {"name": "country", "ne": "DE"}},
    {"trait": {"name": "country", "exists": False}},
    {"trait": {"name": "employees", "gte": 50}},
    {"trait": {"name": "employees", "eq": "20"}},
    {"trait": {"name": "employees", "contains": "min"}},
    {"trait": {"name": "job_title", "matches": "(?i)head of"}},
    {"trait": {"name": "company"}},
    {"trait": {"name": "industry", "not_in": ["Software", 4]}},
]


def test_trait_tests_read_a_matrix_rows_profile_columns_as_they_would_its_traits():
    """A matrix row holds its profile traits as columns of their own; a trait test reads
    them there (no JSON parsed) and selects whom it would select reading the traits: in
    polars and in SQL, for texts, numbers, objects, lists, nulls and missing traits."""
    persons = [
        profile_row("a", company="Acme", employees=120, country="DE", job_title="Head of IT"),
        profile_row("b", employees="20", country="AT", industry="Software"),
        profile_row("c", employees={"min": 10, "max": 50}, country=None, industry=5),
        profile_row("d", employees=5.5, company="", job_title=["CMO", "CEO"]),
        profile_row("e"),
    ]
    empty = {"schema": TOUCHPOINT_SCHEMA}
    rows, _ = build_matrix(
        pl.LazyFrame(persons, schema=PERSON_SCHEMA),
        pl.LazyFrame(**empty),
        pl.LazyFrame(schema=STAGE_HISTORY_SCHEMA),
        parse_model(default_model_text()),
        (),
        MATRIX_NOW,
    )
    rows = rows.collect()
    traits_only = rows.drop(PROFILE_TRAITS)
    assert profile_of(rows.columns) == set(PROFILE_TRAITS) and not profile_of(traits_only.columns)
    segments = {f"s{i}": parse_where(where) for i, where in enumerate(PROFILE_TESTS)}

    def polars_members(frame: pl.DataFrame) -> pl.DataFrame:
        return evaluate(frame.lazy(), pl.LazyFrame(**empty), segments, MATRIX_NOW).collect()

    def sql_members(frame: pl.DataFrame) -> pl.DataFrame:
        db = duckdb.connect()
        db.register("matrix", frame.to_arrow())
        db.register("touchpoints", pl.DataFrame(**empty).to_arrow())
        profile = profile_of(frame.columns)
        sql = segments_sql(
            segments, MATRIX_NOW, matrix="matrix", touchpoints="touchpoints", profile=profile
        )
        return db.sql(sql).pl()

    read = polars_members(rows).sort("person_id")
    assert_frame_equal(read, polars_members(traits_only).sort("person_id"))
    assert_frame_equal(read, sql_members(rows).sort("person_id"), check_dtypes=False)
    assert_frame_equal(read, sql_members(traits_only).sort("person_id"), check_dtypes=False)
    chosen = {sid: read.filter(sid)["person_id"].to_list() for sid in segments}
    assert chosen == {
        "s0": ["a", "b"],
        "s1": ["b"],
        "s2": ["c", "d", "e"],
        "s3": ["a"],
        "s4": ["b"],
        "s5": ["c"],
        "s6": ["a"],
        "s7": ["a"],
        "s8": ["c"],
    }
