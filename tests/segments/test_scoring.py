"""The scoring model: YAML in, explained points out, decaying with the half-life."""

from __future__ import annotations

import pytest

from dmp.records import Tier
from segments.rules import RuleError
from segments.scoring import DAY_MS, default_model_text, parse_model
from tests.factories import MATRIX_NOW, build_rows, profile_row, touch_row

MODEL = parse_model(
    """
fit:
  - when: {trait: job_title, matches: "(?i)marketing|cmo"}
    points: 15
  - when: {trait: employees, gte: 50}
    points: 10
activity:
  half_life_days: 30
  rules:
    - when: {event: whitepaper_download}
      points: 20
    - when: {event: page, url_contains: /pricing}
      points: 10
      max_per_day: 1
    - name: unsubscribed
      when: {event: unsubscribe}
      points: -30
stages:
  mql: {score_gte: 60, tier_gte: medium}
  recycle_after_days: 90
"""
)


def scored(*rows: dict, persons: list[dict] | None = None) -> dict[str, dict[str, float]]:
    """Return person -> rule -> points (unrounded) as a matrix build scores them."""
    people = persons or [profile_row(p) for p in sorted({r["person_id"] for r in rows})]
    built, _ = build_rows(MODEL, people, list(rows))
    return {pid: {p["rule"]: p["points"] for p in r["score_breakdown"]} for pid, r in built.items()}


def test_the_issue_example_parses_with_names_and_stage_rules():
    """Rules without a name are named by what they test; stage rules are typed."""
    assert [r.name for r in MODEL.fit] == [
        "job_title matches (?i)marketing|cmo",
        "employees gte 50",
    ]
    assert [r.max_per_day for r in MODEL.activity] == [None, 1, None]
    assert MODEL.half_life_days == 30.0
    assert MODEL.stages.mql_score_gte == 60 and MODEL.stages.mql_tier_gte is Tier.MEDIUM
    assert MODEL.stages.recycle_after_days == 90


def test_points_halve_every_half_life_in_fractional_days():
    """activity = Σ points × 0.5 ** (age_days / half_life_days), as of the build time."""
    got = scored(
        touch_row("a", 0, "whitepaper_download"),
        touch_row("a", 30, "whitepaper_download"),
        touch_row("a", 45.5, "whitepaper_download"),
        touch_row("b", 60, "unsubscribe"),
        touch_row("c", -1, "whitepaper_download"),  # after the as-of time: does not count
    )
    assert got == {
        "a": {"event eq whitepaper_download": round(20 + 10 + 20 * 0.5 ** (45.5 / 30), 2)},
        "b": {"unsubscribed": -7.5},
        "c": {},
    }


def test_max_per_day_counts_the_days_first_matches_only():
    """Three pricing views on one UTC day count once (the first); another day counts again."""
    today = MATRIX_NOW - MATRIX_NOW % DAY_MS  # 00:00 UTC of the as-of day
    views = [(MATRIX_NOW - today - h * 3_600_000) / DAY_MS for h in (1, 2, 3)]
    rows = [touch_row("a", d, url="https://x/pricing") for d in views]
    rows.append(touch_row("a", 1 + (MATRIX_NOW - today) / DAY_MS, url="https://x/pricing"))
    first = 10 * 0.5 ** (((MATRIX_NOW - today - 3_600_000) / DAY_MS) / 30)
    yesterday = 10 * 0.5 ** ((1 + (MATRIX_NOW - today) / DAY_MS) / 30)
    rule = "event eq page and url contains /pricing"
    assert scored(*rows)["a"] == {rule: round(first + yesterday, 2)}


def test_fit_points_once_per_rule():
    """Each fit rule a person meets adds its points once."""
    people = [
        profile_row("a", job_title="CMO", employees=500),
        profile_row("b", employees=10),
        profile_row("c"),
    ]
    got = scored(persons=people)
    assert got == {
        "a": {"job_title matches (?i)marketing|cmo": 15.0, "employees gte 50": 10.0},
        "b": {},
        "c": {},
    }


def test_the_default_model_is_valid_and_documented():
    """The model dmp ships parses and explains its own vocabulary."""
    text = default_model_text()
    model = parse_model(text)
    assert model.fit and model.activity and "dmp scoring apply" in text
    assert {r.name for r in model.activity} >= {"pricing page", "unsubscribe"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("fit: [", "model: not valid YAML at line"),
        ("- 1", "model: expected a mapping"),
        ("scores: []", "model.scores: unknown key"),
        ("fit: {}", "fit: expected a list of rules"),
        ("fit: [{when: {trait: x}}]", "fit[0]: a rule needs when and points"),
        ("fit: [{when: {trait: x}, points: ten}]", "fit[0].points: expected a number"),
        ("fit: [{when: {event: page}, points: 1}]", "fit[0].when: a fit rule speaks of the person"),
        ("fit: [{when: {trait: x}, points: 1, max_per_day: 2}]", "fit[0].max_per_day: unknown key"),
        (
            "activity: {rules: [{when: {event: a}, points: 1, max_per_day: 0}]}",
            "activity.rules[0].max_per_day: expected a whole number",
        ),
        ("activity: {half_life_days: 0}", "activity.half_life_days: expected a number of days"),
        ("activity: {half_life: 3}", "activity.half_life: unknown key"),
        (
            "activity: {rules: [{when: {event: a}, points: 1}, {when: {event: a}, points: 2}]}",
            "activity.rules[1].name: two rules named",
        ),
        ("stages: {mql: {tier_gte: gold}}", "stages.mql.tier_gte: expected one of"),
        ("stages: {recycle_after_days: -1}", "stages.recycle_after_days: expected a positive"),
    ],
)
def test_bad_models_name_the_path_and_the_problem(text, message):
    """A model that cannot work is refused with where and why."""
    with pytest.raises(RuleError) as caught:
        parse_model(text)
    assert str(caught.value).startswith(message)
