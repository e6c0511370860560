"""The rule vocabulary: parsing with path-named errors, and the polars it compiles to."""

from __future__ import annotations

import polars as pl
import pytest

from segments.compiler import compile_when
from segments.rules import Attr, Condition, Op, RuleError, parse_when

TOUCHPOINTS = pl.DataFrame(
    {
        "event": ["page", "page", "whitepaper_download", "open"],
        "type": ["page", "page", "track", "track"],
        "source": ["pixel", "tag", "api", "newsletter"],
        "channel": ["web", "web", "web", "email"],
        "site_id": ["acme", "acme", "acme", None],
        "url": ["https://acme.de/pricing?x=1", "https://acme.de/blog", None, None],
        "title": ["Preise", None, None, None],
        "topics": [["crm"], [], ["crm", "ads"], None],
        "properties": [None, None, '{"format": "pdf", "pages": 12}', "{}"],
    },
    schema_overrides={"topics": pl.List(pl.Utf8)},
)
PERSONS = pl.DataFrame(
    {
        "traits": [
            '{"job_title": "Head of Marketing", "employees": 120, "country": "DE"}',
            '{"job_title": "CTO", "employees": "20"}',
            None,
            "{}",
        ]
    }
)


def matches(frame: pl.DataFrame, data: dict, scope: str) -> list[bool]:
    return frame.select(compile_when(parse_when(data, "w", scope=scope))).to_series().to_list()


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ({"event": "page"}, [True, True, False, False]),
        ({"event": ["open", "whitepaper_download"]}, [False, False, True, True]),
        ({"event": "page", "url_contains": "/pricing"}, [True, False, False, False]),
        ({"url_matches": "(?i)^https://ACME\\.de/b"}, [False, True, False, False]),
        ({"title_contains": "Preis"}, [True, False, False, False]),
        ({"topic": "crm"}, [True, False, True, False]),
        ({"topic": ["ads", "seo"]}, [False, False, True, False]),
        ({"channel": "email", "source": "newsletter"}, [False, False, False, True]),
        ({"site": "acme", "type": "track"}, [False, False, True, False]),
        ({"property": "format", "eq": "pdf"}, [False, False, True, False]),
        ({"property": {"name": "pages", "gte": 10}}, [False, False, True, False]),
        ({"property": "format"}, [False, False, True, False]),
    ],
)
def test_touchpoint_filters(when, expected):
    """Every key of a touchpoint filter must hold; lists mean any of."""
    assert matches(TOUCHPOINTS, when, "touchpoint") == expected


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ({"trait": "job_title", "matches": "(?i)marketing|cmo"}, [True, False, False, False]),
        ({"trait": "employees", "gte": 50}, [True, False, False, False]),
        ({"trait": "employees", "lt": 50}, [False, True, False, False]),
        ({"trait": {"name": "employees", "in": [20, 120]}}, [True, True, False, False]),
        ({"trait": "country", "in": ["DE", "AT"]}, [True, False, False, False]),
        ({"trait": "country", "not_in": ["AT"]}, [True, False, False, False]),
        ({"trait": "country", "ne": "AT"}, [True, False, False, False]),
        ({"trait": "job_title", "eq": "CTO"}, [False, True, False, False]),
        ({"trait": "job_title", "contains": "Market"}, [True, False, False, False]),
        ({"trait": "country"}, [True, False, False, False]),
        ({"trait": "country", "exists": False}, [False, True, True, True]),
    ],
)
def test_trait_conditions(when, expected):
    """Trait conditions read the traits JSON; numbers compare as numbers, missing is false."""
    assert matches(PERSONS, when, "person") == expected


@pytest.mark.parametrize(
    ("when", "scope", "message"),
    [
        ({"evnt": "page"}, "touchpoint", "w.evnt: unknown key"),
        ({"trait": "employees", "gte": "fifty"}, "person", "w.trait.gte: expected a number"),
        ({"trait": "x", "matches": "(?<=a)b"}, "person", "w.trait.matches: not a regular"),
        ({"trait": "x", "matches": "("}, "person", "w.trait.matches: not a regular"),
        ({"event": "page", "gte": 1}, "touchpoint", "w.gte: an operator needs a trait"),
        ({"trait": "a b"}, "person", "w.trait: expected a name"),
        ({"trait": "x", "property": "y"}, "person", "w: one of trait or property"),
        ({"trait": {"name": "x", "gte": 1}, "lt": 3}, "person", "w.trait: give the operators"),
        ({"trait": {"name": "x", "bigger": 1}}, "person", "w.trait.bigger: unknown operator"),
        ({"trait": "x", "in": []}, "person", "w.trait.in: expected a non-empty list"),
        ({"trait": "x", "exists": "yes"}, "person", "w.trait.exists: expected true or false"),
        ({"event": {"a": 1}}, "touchpoint", "w.event: expected a string or a number"),
        ({"event": "page"}, "person", "w: a fit rule speaks of the person"),
        ({"trait": "x"}, "touchpoint", "w: an activity rule speaks of a touchpoint"),
        ([], "touchpoint", "w: expected a mapping"),
        ({}, "touchpoint", "w: expected a mapping"),
        ("page", "touchpoint", "w: expected a mapping"),
    ],
)
def test_bad_rules_name_the_path_and_the_problem(when, scope, message):
    """A rule that cannot work is refused with where and why."""
    with pytest.raises(RuleError) as caught:
        parse_when(when, "w", scope=scope)
    assert str(caught.value).startswith(message)


def test_a_rule_describes_itself():
    """The default name of a rule is the rule spelled out."""
    when = parse_when({"event": "page", "url_contains": "/pricing"}, "w", scope="touchpoint")
    assert when.conditions == (
        Condition(Attr.EVENT, Op.EQ, "page"),
        Condition(Attr.URL, Op.CONTAINS, "/pricing"),
    )
    assert when.describe() == "event eq page and url contains /pricing"
    trait = parse_when({"trait": "country", "in": ["DE", "AT"]}, "w", scope="person")
    assert trait.describe() == "country in DE,AT" and trait.on_person
