"""Spark SQL from the same emitter gives the polars answers: rules, matrix, segments."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from dmp.matrix import sources
from dmp.matrix.spark import matrix_schema, to_spark
from segments.matrix import build_matrix
from segments.rules import parse_when
from segments.scoring import default_model_text, parse_model
from segments.sql import segments_sql, when_sql
from segments.sqldialect import SPARK
from segments.sqlmatrix import matrix_sql
from tests.factories import MATRIX_NOW, fifty_segments, run_synth
from tests.segments.cases import (
    LAST_CHANNEL_TIES,
    PERSONS,
    TOUCHPOINT_FILTERS,
    TOUCHPOINTS,
    TRAIT_CONDITIONS,
)
from tests.segments.test_sql import tie_frames


def _select(spark, frame: pl.DataFrame, sql: str) -> list[bool]:
    to_spark(spark, frame.with_row_index("i")).createOrReplaceTempView("frame")
    return [row.ok for row in spark.sql(f"SELECT {sql} AS ok FROM frame ORDER BY i").collect()]


@pytest.mark.parametrize(("when", "expected"), TOUCHPOINT_FILTERS)
def test_touchpoint_filters_on_spark(spark, when, expected):
    """Each touchpoint filter selects the same rows on Spark as in polars."""
    sql = when_sql(parse_when(when, "w", scope="touchpoint"), SPARK)
    assert _select(spark, TOUCHPOINTS, sql) == expected


@pytest.mark.parametrize(("when", "expected"), TRAIT_CONDITIONS)
def test_trait_conditions_on_spark(spark, when, expected):
    """Each trait condition selects the same persons on Spark as in polars."""
    sql = when_sql(parse_when(when, "w", scope="person"), SPARK)
    assert _select(spark, PERSONS, sql) == expected


def test_the_last_channel_of_simultaneous_touchpoints_on_spark_is_polars_one(spark):
    """Ties for the last channel broken as polars breaks them (tests/segments/cases.py)."""
    for name, frame in zip(("persons", "touchpoints", "history"), tie_frames(), strict=True):
        to_spark(spark, frame).createOrReplaceTempView(name)
    model = parse_model(default_model_text())
    sql = matrix_sql(
        model,
        (),
        MATRIX_NOW,
        persons="persons",
        touchpoints="touchpoints",
        history="history",
        dialect=SPARK,
    )
    got = {row.person_id: row.last_channel for row in spark.sql(sql).collect()}
    assert got == LAST_CHANNEL_TIES[1]


def test_the_matrix_on_spark_equals_the_polars_build(spark, runner, redis, config):
    """On synth data, Spark's one query gives the polars build's rows, equal numbers."""
    run_synth(runner, 250, 60, 4)
    people = sources.read_people(redis)
    touchpoints = sources.read_touchpoints(config.events_dir, people.merged).collect()
    model, catalog = sources.scoring_model(redis), sources.content_catalog(redis)
    as_of = int(touchpoints["timestamp"].max()) + 3_600_000
    expected, _ = build_matrix(
        people.persons.lazy(), touchpoints.lazy(), people.history.lazy(), model, catalog, as_of
    )
    expected = expected.collect()
    for name, frame in [
        ("persons", people.persons),
        ("history", people.history),
        ("touchpoints", touchpoints),
    ]:
        to_spark(spark, frame).createOrReplaceTempView(name)
    sql = matrix_sql(
        model,
        catalog,
        as_of,
        persons="persons",
        touchpoints="touchpoints",
        history="history",
        dialect=SPARK,
    )
    found = pl.from_arrow(spark.sql(sql).toArrow())
    got = found.cast(matrix_schema(model, catalog, as_of)).sort("person_id")  # type: ignore[union-attr]
    assert expected["stage"].n_unique() > 2 and expected["next_content"].null_count() < got.height
    assert_frame_equal(got, expected, check_exact=True)


def test_fifty_segments_on_spark_equal_the_polars_evaluation(spark, runner, redis, config):
    """The fifty example segments: Spark's one query picks the same persons as polars."""
    case = fifty_segments(runner, redis, config)
    to_spark(spark, case.matrix).createOrReplaceTempView("matrix")
    to_spark(spark, case.touchpoints).createOrReplaceTempView("touchpoints")
    sql = segments_sql(
        case.trees, case.as_of_ms, matrix="matrix", touchpoints="touchpoints", dialect=SPARK
    )
    got = pl.from_arrow(spark.sql(sql).toArrow())
    assert isinstance(got, pl.DataFrame)
    case.check(got)
