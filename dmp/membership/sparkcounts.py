"""The Spark half of segment runs (``DMP_ENGINE=spark``): ``did`` counts over the event
log and every segment's flags over the matrix rows, each one Spark SQL query from the
same AST as polars' (:mod:`segments.sql`); ``dmp.membership.runs`` keeps and writes them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from dmp.config import Config
from dmp.matrix import spark as engine
from segments.evaluator import all_dids, profile_of
from segments.language import Did, Node
from segments.sql import did_counts_sql, membership_sql
from segments.sqldialect import SPARK


def did_counts(
    config: Config,
    merged: dict[str, str],
    files: list[str] | None,
    dids: list[Did],
    as_of_ms: int,
    persons: list[str] | None = None,
) -> pl.DataFrame:
    """Return ``segments.evaluator.did_counts`` (with ``next_change``) of the event log's
    ``files`` (None: all), for ``persons`` only if given."""
    from pyspark.sql import functions as F

    spark = engine.session(config)
    touchpoints = engine.read_touchpoints(spark, config, files, merged)
    if persons is not None:  # an incremental run's few: a broadcast semi-join
        ids = engine.to_spark(
            spark, pl.DataFrame({"person_id": persons}, schema={"person_id": pl.Utf8})
        )
        touchpoints = touchpoints.join(F.broadcast(ids), on="person_id", how="left_semi")
    touchpoints.createOrReplaceTempView("touchpoints")
    sql = did_counts_sql(dids, as_of_ms, touchpoints="touchpoints", dialect=SPARK, expiry=True)
    return _collect(spark.sql(sql))


def membership(
    config: Config,
    snapshot: Path,
    manifest: Mapping[str, Any],
    counts: pl.DataFrame,
    segments: Mapping[str, Node],
) -> pl.DataFrame:
    """Return ``person_id`` and one Boolean column per segment over the snapshot's rows
    (Spark's own copy when a Spark build wrote one) and the ``did`` counts."""
    spark = engine.session(config)
    copy = manifest.get("spark_rows") if manifest.get("engine") == "spark" else None
    rows = spark.read.parquet(copy) if copy else engine.to_spark(spark, pl.read_parquet(snapshot))
    rows.createOrReplaceTempView("matrix")
    with_counts = bool(all_dids(segments))
    if with_counts:
        engine.to_spark(spark, counts).createOrReplaceTempView("counts")
    sql = membership_sql(
        segments,
        matrix="matrix",
        counts="counts" if with_counts else None,
        dialect=SPARK,
        profile=profile_of(rows.columns),
    )
    return _collect(spark.sql(sql)).sort("person_id")


def _collect(frame: Any) -> pl.DataFrame:
    found = pl.from_arrow(frame.toArrow())
    assert isinstance(found, pl.DataFrame)
    return found
