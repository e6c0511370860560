"""The funnel: persons per stage and tier add up, conversion and days in stage."""

from __future__ import annotations

import polars as pl
import pytest

from segments.funnel import build_funnel
from segments.scoring import DAY_MS
from segments.stages import STAGE_HISTORY_SCHEMA
from tests.factories import MATRIX_NOW

ROWS = pl.DataFrame(
    {
        "person_id": ["a", "b", "c", "d", "e"],
        "tier": ["high", "medium", "low", "low", "medium"],
        "stage": ["won", "mql", "lead", "lead", "sql"],
        "stage_since": [MATRIX_NOW - days * DAY_MS for days in (5, 10, 30, 2, 4)],
        "first_seen": [MATRIX_NOW - days * DAY_MS for days in (100, 40, 30, 2, 50)],
    }
)
HISTORY = (
    pl.DataFrame(
        [
            ("a", "mql", MATRIX_NOW - 80 * DAY_MS),
            ("a", "sal", MATRIX_NOW - 60 * DAY_MS),
            ("a", "sql", MATRIX_NOW - 20 * DAY_MS),
            ("a", "won", MATRIX_NOW - 5 * DAY_MS),
            ("b", "mql", MATRIX_NOW - 10 * DAY_MS),
            ("e", "sql", MATRIX_NOW - 4 * DAY_MS),  # sales moved e straight to sql
            ("e", "sql", MATRIX_NOW - 3 * DAY_MS),  # a repeated record continues the stay
        ],
        schema=["person_id", "stage", "at"],
        orient="row",
    )
    .with_columns(source=pl.lit("crm"))
    .cast(STAGE_HISTORY_SCHEMA)
)  # type: ignore[arg-type]


@pytest.fixture
def funnel() -> dict:
    return build_funnel(ROWS, HISTORY, MATRIX_NOW)


def test_stages_and_tiers_add_up_to_the_persons(funnel):
    """Every person is in exactly one stage and one tier."""
    assert funnel["persons"] == 5
    assert sum(s["persons"] for s in funnel["stages"]) == 5
    assert sum(t["persons"] for t in funnel["tiers"]) == 5
    assert {s["stage"]: s["persons"] for s in funnel["stages"]}["lead"] == 2
    assert [t["tier"] for t in funnel["tiers"]] == ["high", "medium", "low", "unknown"]


def test_conversion_counts_stages_passed_over(funnel):
    """Reached mql: a, b, e (e skipped it); sal: a, e; sql: a, e; won: a."""
    rates = {
        (c["from"], c["to"]): (c["reached_to"], c["reached_from"]) for c in funnel["conversion"]
    }
    assert rates == {
        ("lead", "mql"): (3, 5),
        ("mql", "sal"): (2, 3),
        ("sal", "sql"): (2, 2),
        ("sql", "won"): (1, 2),
    }
    assert funnel["conversion"][0]["rate"] == 0.6


def test_median_days_per_stay(funnel):
    """Days in a stage run from its entry to the next stage (or the as-of time)."""
    days = {s["stage"]: s["median_days"] for s in funnel["stages"]}
    # lead stays: a 20, b 30, c 30 (ongoing), d 2 (ongoing), e 46 -> median 30
    assert days["lead"] == 30.0
    assert days["mql"] == 15.0  # a 20, b 10 (ongoing)
    assert days["sql"] == 9.5  # a 15, e 4 (ongoing; the repeat is the same stay)
    assert days["lost"] is None
