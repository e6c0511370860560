"""The SQL backend (DuckDB) gives what the polars one gives: rules and the whole matrix."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from dmp.matrix import sources
from segments.language import parse_where
from segments.matrix import PERSON_SCHEMA, TOUCHPOINT_SCHEMA, build_matrix
from segments.rules import parse_when
from segments.scoring import default_model_text, parse_model
from segments.sql import node_sql, when_sql
from segments.sqlmatrix import matrix_sql
from segments.stages import STAGE_HISTORY_SCHEMA
from tests.factories import (
    MATRIX_NOW,
    MATRIX_SCHEMA,
    fifty_segments,
    matrix_row,
    profile_row,
    run_synth,
    touch_row,
)
from tests.segments.cases import (
    LAST_CHANNEL_TIES,
    OUTSIDE_THE_ORDER,
    OUTSIDE_THE_ORDER_ROWS,
    PERSONS,
    TOUCHPOINT_FILTERS,
    TOUCHPOINTS,
    TRAIT_CONDITIONS,
)


def _select(frame: pl.DataFrame, sql: str) -> list[bool]:
    rel = duckdb.from_arrow(frame.with_row_index("i").to_arrow())
    return rel.query("frame", f"SELECT {sql} AS ok FROM frame ORDER BY i").pl()["ok"].to_list()


@pytest.mark.parametrize(("when", "expected"), TOUCHPOINT_FILTERS)
def test_touchpoint_filters_in_sql(when, expected):
    """Each touchpoint filter selects the same rows in DuckDB as in polars."""
    sql = when_sql(parse_when(when, "w", scope="touchpoint"))
    got = _select(TOUCHPOINTS, sql)
    assert got == expected


@pytest.mark.parametrize(("when", "expected"), TRAIT_CONDITIONS)
def test_trait_conditions_in_sql(when, expected):
    """Each trait condition selects the same persons in DuckDB as in polars."""
    sql = when_sql(parse_when(when, "w", scope="person"))
    got = _select(PERSONS, sql)
    assert got == expected


def tie_frames() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Return persons, touchpoints and an empty stage history of LAST_CHANNEL_TIES."""
    touches, expected = LAST_CHANNEL_TIES
    persons = pl.DataFrame([profile_row(p) for p in expected], schema=PERSON_SCHEMA)
    rows = [touch_row(p, days, channel=c) for p, days, c in touches]
    return (
        persons,
        pl.DataFrame(rows, schema=TOUCHPOINT_SCHEMA),
        pl.DataFrame(schema=STAGE_HISTORY_SCHEMA),
    )


@pytest.mark.parametrize(("where", "expected"), OUTSIDE_THE_ORDER)
def test_a_stage_or_tier_outside_the_order_in_sql(where, expected):
    """SQL's stage and tier lists, like polars': a value outside the order, or none, is in
    no list and in no complement (tests/segments/test_language.py)."""
    people = [matrix_row(p, **columns) for p, columns in OUTSIDE_THE_ORDER_ROWS.items()]
    frame = pl.DataFrame(people, schema=MATRIX_SCHEMA)
    flags = _select(frame, node_sql(parse_where(where)))
    assert sorted(p for p, ok in zip(frame["person_id"], flags, strict=True) if ok) == expected


def test_the_last_channel_of_simultaneous_touchpoints_in_sql_is_polars_one():
    """Ties for the last channel broken alike: the first by name, a missing one first."""
    persons, touchpoints, history = tie_frames()
    model = parse_model(default_model_text())
    built, _ = build_matrix(
        persons.lazy(), touchpoints.lazy(), history.lazy(), model, (), MATRIX_NOW
    )
    sql = matrix_sql(
        model, (), MATRIX_NOW, persons="persons", touchpoints="touchpoints", history="history"
    )
    got = duckdb.sql(sql).pl().sort("person_id")
    expected = LAST_CHANNEL_TIES[1]
    assert dict(built.collect().select("person_id", "last_channel").iter_rows()) == expected
    assert dict(got.select("person_id", "last_channel").iter_rows()) == expected


def test_the_matrix_in_sql_equals_the_polars_build(runner, redis, config):
    """On synth data, DuckDB's one query gives the polars build's rows, column by column."""
    run_synth(runner, 250, 60, 4)
    people = sources.read_people(redis)
    persons, history = people.persons, people.history
    touchpoints = sources.read_touchpoints(config.events_dir, people.merged).collect()
    model, catalog = sources.scoring_model(redis), sources.content_catalog(redis)
    as_of = int(touchpoints["timestamp"].max()) + 3_600_000
    expected, _ = build_matrix(
        persons.lazy(), touchpoints.lazy(), history.lazy(), model, catalog, as_of
    )
    expected = expected.collect()
    sql = matrix_sql(
        model, catalog, as_of, persons="persons", touchpoints="touchpoints", history="history"
    )
    got = duckdb.sql(sql).pl().cast(expected.schema)  # type: ignore[arg-type]
    assert expected.height == persons.height and got.height == expected.height
    assert (
        expected["stage"].n_unique() > 2 and expected["next_content"].null_count() < expected.height
    )
    assert_frame_equal(got, expected, check_exact=False, abs_tol=0.011)


def test_segments_in_sql_equal_the_polars_evaluation(runner, redis, config):
    """Fifty segments of mixed shapes: DuckDB's one query picks the same persons."""
    from segments.sql import segments_sql

    case = fifty_segments(runner, redis, config)
    matrix, touchpoints = case.matrix, case.touchpoints  # noqa: F841 (DuckDB reads them)
    sql = segments_sql(case.trees, case.as_of_ms, matrix="matrix", touchpoints="touchpoints")
    case.check(duckdb.sql(sql).pl())
