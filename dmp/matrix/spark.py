"""The Spark engine (``DMP_ENGINE=spark``): the process's one SparkSession, the inputs as
Spark frames, and the matrix rows of a build computed by Spark.

Spark reads the event log where ``DMP_SPARK_DATA_URI`` says (any Hadoop-compatible URI;
the data dir by default) and persons and stage history from a Parquet export the build
writes there from Redis (``<uri>/spark/``, overwritten by each build). The matrix is
:func:`segments.sqlmatrix.matrix_sql` in Spark's dialect; its rows come back to this
process as Arrow and are written by ``dmp.matrix.snapshots`` in the polars layout.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

import polars as pl

from dmp.config import Config
from dmp.matrix.sources import People
from segments.content import ContentItem
from segments.matrix import PERSON_SCHEMA, TOUCHPOINT_SCHEMA, build_matrix
from segments.personstate import person_state
from segments.scoring import ScoringModel
from segments.sqldialect import SPARK
from segments.sqlmatrix import STAGE_CHANGED, matrix_sql
from segments.stages import STAGE_HISTORY_SCHEMA

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)
_LOCK = threading.Lock()
_SESSION: SparkSession | None = None


def session(config: Config) -> SparkSession:
    """Return the process's SparkSession, started on first use on ``DMP_SPARK_MASTER``."""
    global _SESSION
    with _LOCK:
        if _SESSION is None:
            from pyspark.sql import SparkSession

            master = config.spark_master or "local[*]"
            builder = (
                SparkSession.builder.master(master)
                .appName("dmp")
                .config("spark.sql.session.timeZone", "UTC")
                .config("spark.sql.legacy.sizeOfNull", "false")  # size(NULL) is NULL
                .config("spark.ui.showConsoleProgress", "false")
            )
            if master.startswith("local"):  # a few tasks per core, not the cluster's 200
                cores = master[len("local[") : -1] if "[" in master else "1"
                star = cores in ("*", "")
                n = (os.cpu_count() or 2) if star else int(cores.split(",")[0])
                builder = builder.config("spark.sql.shuffle.partitions", str(max(2, 2 * n)))
                # A build reads the event log as a list of files (one per flush, so
                # hundreds): past 32 paths Spark lists them with a job of one task per
                # path, seconds of pure overhead when the "cluster" is this machine.
                builder = builder.config(
                    "spark.sql.sources.parallelPartitionDiscovery.threshold", "1000000"
                )
            _SESSION = builder.getOrCreate()
            _SESSION.sparkContext.setLogLevel("WARN")
            log.info("spark: a session on %s", master)
        return _SESSION


def data_uri(config: Config) -> str:
    """Return the URI Spark reads the event log under and writes its exports to."""
    return config.spark_data_uri.rstrip("/") or config.data_dir.resolve().as_uri()


def to_spark(spark: SparkSession, frame: pl.DataFrame) -> DataFrame:
    """Return a polars frame as a Spark frame (Spark has no unsigned integers)."""
    wide = {n: _signed(t) for n, t in frame.schema.items()}
    return spark.createDataFrame(frame.cast(wide).to_arrow())  # type: ignore[arg-type]


def _signed(dtype: pl.DataType) -> pl.DataType:
    """Return a type with every unsigned integer in it (lists, structs) as Int64."""
    if dtype in (pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64):
        return pl.Int64()
    if isinstance(dtype, pl.List):
        return pl.List(_signed(dtype.inner))
    if isinstance(dtype, pl.Struct):
        return pl.Struct({f.name: _signed(f.dtype) for f in dtype.fields})
    return dtype


def export(spark: SparkSession, frame: pl.DataFrame, uri: str) -> DataFrame:
    """Write a frame as Parquet to ``uri`` (replacing what is there) and return it read
    back, so that a cluster's executors read it from there, not from this process."""
    to_spark(spark, frame).write.mode("overwrite").parquet(uri)
    return spark.read.parquet(uri)


def read_touchpoints(
    spark: SparkSession, config: Config, files: list[str] | None, merged: dict[str, str]
) -> DataFrame:
    """Return the event log's (or its ``files``') identified events as touchpoints (ms
    timestamps) of the persons they are now, as ``sources.read_touchpoints`` does."""
    from pyspark.sql import functions as F

    root = data_uri(config) + "/events"
    if files == []:
        return to_spark(spark, pl.DataFrame(schema=TOUCHPOINT_SCHEMA))
    paths = [f"{root}/dt=*/part-*.parquet"] if files is None else [f"{root}/{f}" for f in files]
    events = spark.read.parquet(*paths).where(F.col("person_id").isNotNull())
    columns = [c for c in TOUCHPOINT_SCHEMA if c not in ("person_id", "timestamp")]
    frame = events.select("person_id", F.unix_millis("timestamp").alias("timestamp"), *columns)
    if not merged:
        return frame
    moves = to_spark(spark, pl.DataFrame({"person_id": list(merged), "now": list(merged.values())}))
    return (
        frame.join(F.broadcast(moves), on="person_id", how="left")  # a small map: broadcast
        .withColumn("person_id", F.coalesce("now", "person_id"))
        .select(*TOUCHPOINT_SCHEMA)
    )


def build_rows(
    config: Config,
    people: People,
    merged: dict[str, str],
    files: list[str],
    model: ScoringModel,
    catalog: tuple[ContentItem, ...],
    as_of_ms: int,
) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    """Return a full build's matrix rows, its new stage transitions (as
    ``segments.stages.stage_changes``) and the URI of the rows' Spark copy."""
    spark = session(config)
    out = data_uri(config) + "/spark"
    export(spark, people.persons, f"{out}/persons").createOrReplaceTempView("persons")
    export(spark, people.history, f"{out}/history").createOrReplaceTempView("history")
    read_touchpoints(spark, config, files, merged).createOrReplaceTempView("touchpoints")
    sql = matrix_sql(
        model,
        catalog,
        as_of_ms,
        persons="persons",
        touchpoints="touchpoints",
        history="history",
        dialect=SPARK,
        changes=True,
    )
    # Written once, then read back twice: by this build (Arrow) and by segment runs.
    spark.sql(sql).write.mode("overwrite").parquet(f"{out}/matrix")
    found = pl.from_arrow(spark.read.parquet(f"{out}/matrix").toArrow())
    assert isinstance(found, pl.DataFrame)
    schema = matrix_schema(model, catalog, as_of_ms)
    rows = found.select(*schema).cast(schema).sort("person_id")  # type: ignore[arg-type]
    changed = found.filter(STAGE_CHANGED).select(
        "person_id", "stage", at="stage_since", source=pl.lit("model")
    )
    return rows, changed.cast(STAGE_HISTORY_SCHEMA).sort("person_id"), f"{out}/matrix"  # type: ignore[arg-type]


def matrix_schema(
    model: ScoringModel, catalog: tuple[ContentItem, ...], as_of_ms: int
) -> dict[str, pl.DataType]:
    """Return the schema of the polars build's rows (what a Spark build is cast to)."""
    rows, _ = build_matrix(*_empty(), model, catalog, as_of_ms)
    return dict(rows.collect_schema())


def empty_state(
    model: ScoringModel, catalog: tuple[ContentItem, ...], as_of_ms: int, scale: float
) -> pl.DataFrame:
    """Return a state sidecar without rows: a Spark build keeps no state (every row is
    refolded), so the next incremental polars build starts afresh."""
    persons, touchpoints, _ = _empty()
    state = person_state(persons, touchpoints, model, catalog, as_of_ms, scale)
    return pl.DataFrame(schema=state.collect_schema())


def _empty() -> tuple[pl.LazyFrame, pl.LazyFrame, pl.LazyFrame]:
    return (
        pl.LazyFrame(schema=PERSON_SCHEMA),
        pl.LazyFrame(schema=TOUCHPOINT_SCHEMA),
        pl.LazyFrame(schema=STAGE_HISTORY_SCHEMA),
    )
