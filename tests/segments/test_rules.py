"""The rule vocabulary: parsing with path-named errors, and the polars it compiles to."""

from __future__ import annotations

import polars as pl
import pytest

from segments.compiler import compile_when
from segments.rules import Attr, Condition, Op, RuleError, parse_when
from tests.segments.cases import PERSONS, TOUCHPOINT_FILTERS, TOUCHPOINTS, TRAIT_CONDITIONS


def matches(frame: pl.DataFrame, data: dict, scope: str) -> list[bool]:
    return frame.select(compile_when(parse_when(data, "w", scope=scope))).to_series().to_list()


@pytest.mark.parametrize(("when", "expected"), TOUCHPOINT_FILTERS)
def test_touchpoint_filters(when, expected):
    """Every key of a touchpoint filter must hold; lists mean any of."""
    assert matches(TOUCHPOINTS, when, "touchpoint") == expected


@pytest.mark.parametrize(("when", "expected"), TRAIT_CONDITIONS)
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
