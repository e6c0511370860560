"""bench/spark.py ``--data matrix``: the compute path of a build and a segment run on
bench/matrix.py's generated data (persons and stage history as Parquet files, a 90-day
event log in dmp's layout), polars against Spark, each round in fresh child processes.

Persons and history come from the Parquet files, not from Redis (the benchmark is of the
compute path; reading Redis is the same for both engines). Polars runs the engine's own
functions (``segments.matrix.build_matrix`` streamed to Parquet, then
``segments.evaluator.did_counts`` and ``membership``); Spark runs ``dmp.matrix.spark``'s
``build_rows`` (the persons and history exported through Spark, the event files read,
``segments.sqlmatrix.matrix_sql`` in Spark's dialect, the rows back as Arrow) and
``dmp.membership.sparkcounts`` (``segments.sql``'s ``did`` counts and membership).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import polars as pl
from matrix import AS_OF, polars_matrix  # bench/matrix.py: its data, its as-of time

from dmp.matrix.sources import People, event_files, read_touchpoints
from dmp.synth import catalog_yaml, example_segments
from segments.content import parse_catalog
from segments.definition import parse_definition
from segments.evaluator import NEXT_CHANGE, all_dids, did_counts, did_key, membership
from segments.language import Node
from segments.scoring import default_model_text, parse_model


def segment_trees() -> dict[str, Node]:
    """Return the 50 example segments' rule trees by id."""
    found = [parse_definition(d) for d in example_segments(50)]
    return {d.id: d.where for d in found}


def counts_schema(trees: dict[str, Node]) -> dict[str, pl.DataType]:
    """Return the did counts' schema, as ``dmp.membership.runs`` casts them."""
    keys = [did_key(d) for d in all_dids(trees)]
    return {"person_id": pl.Utf8(), **dict.fromkeys(keys, pl.UInt32()), NEXT_CHANGE: pl.Int64()}


def run_polars(folder: Path) -> dict[str, Any]:
    """Build the matrix and run the 50 segments with polars; return the timings."""
    trees = segment_trees()
    started = time.perf_counter()
    matrix = polars_matrix(folder)
    rows = folder / "out-polars-rows.parquet"
    matrix.sink_parquet(rows, engine="streaming")
    built = time.perf_counter()
    touchpoints = read_touchpoints(folder / "events", {})
    schema = counts_schema(trees)
    dids = all_dids(trees)
    counts = did_counts(touchpoints, dids, AS_OF, expiry=True).collect(engine="streaming")
    counts = counts.select(list(schema)).cast(schema)  # type: ignore[arg-type]
    flags = membership(pl.scan_parquet(rows), counts.lazy(), trees).collect()
    flags.write_parquet(folder / "out-polars-flags.parquet")
    ran = time.perf_counter()
    return {"build_s": built - started, "run_s": ran - built, "out": str(folder)}


def run_spark(folder: Path, master: str) -> dict[str, Any]:
    """Build the matrix and run the 50 segments on Spark; return the timings."""
    from dmp.config import load_config
    from dmp.matrix import spark as engine
    from dmp.membership import sparkcounts

    config = load_config({"data_dir": folder, "engine": "spark", "spark_master": master})
    model, catalog = parse_model(default_model_text()), parse_catalog(catalog_yaml())
    trees = segment_trees()
    started = time.perf_counter()
    engine.session(config)
    session = time.perf_counter()
    people = People(
        pl.read_parquet(folder / "persons.parquet"), pl.read_parquet(folder / "history.parquet"), {}
    )
    files = event_files(folder / "events")
    rows, _, copy = engine.build_rows(config, people, {}, files, model, catalog, AS_OF)
    rows.write_parquet(folder / "out-spark-rows.parquet")  # as a build writes its snapshot
    built = time.perf_counter()
    schema = counts_schema(trees)
    counts = sparkcounts.did_counts(config, {}, files, all_dids(trees), AS_OF)
    counts = counts.select(list(schema)).cast(schema)  # type: ignore[arg-type]
    manifest = {"engine": "spark", "spark_rows": copy}
    flags = sparkcounts.membership(config, Path(), manifest, counts, trees)
    flags.write_parquet(folder / "out-spark-flags.parquet")
    ran = time.perf_counter()
    return {
        "session_s": session - started,
        "build_s": built - session,
        "run_s": ran - built,
        "out": str(folder),
        "stages": _stages(engine.session(config)),
    }


def _stages(spark: Any) -> int:
    """Return how many stages the session's jobs ran (from its status tracker)."""
    tracker = spark.sparkContext.statusTracker()
    jobs = [tracker.getJobInfo(j) for j in tracker.getJobIdsForGroup(None)]
    return sum(len(j.stageIds) for j in jobs if j is not None)


def summary(folder: Path, engine: str) -> dict[str, Any]:
    """Return what two engines' rows and memberships must agree on."""
    frame = pl.read_parquet(folder / f"out-{engine}-rows.parquet")
    flags = pl.read_parquet(folder / f"out-{engine}-flags.parquet")
    return {
        "rows": frame.height,
        "score": frame["score"].sum(),
        "fit_score": frame["fit_score"].sum(),
        "activity_score": frame["activity_score"].sum(),
        "touchpoints": int(frame["touchpoints_total"].sum()),
        "touchpoints_30d": int(frame["touchpoints_30d"].sum()),
        "stages": dict(sorted(frame.group_by("stage").len().iter_rows())),
        "top_interest": dict(sorted(frame.group_by("top_interest").len().drop_nulls().iter_rows())),
        "next_content": dict(sorted(frame.group_by("next_content").len().drop_nulls().iter_rows())),
        "members": {c: int(flags[c].sum()) for c in flags.columns if c != "person_id"},
    }


SUMS = ("score", "fit_score", "activity_score")


def agree(one: dict[str, Any], other: dict[str, Any]) -> bool:
    """Return whether two summaries agree (score sums to 1e-7 relative, the rest exactly)."""
    exact = all(one[k] == other[k] for k in one if k not in SUMS)
    return exact and all(math.isclose(one[k], other[k], rel_tol=1e-7) for k in SUMS)


def identical(folder: Path) -> bool:
    """Return whether both engines wrote exactly the same rows and memberships."""
    same = True
    for kind in ("rows", "flags"):
        one = pl.read_parquet(folder / f"out-polars-{kind}.parquet").sort("person_id")
        other = pl.read_parquet(folder / f"out-spark-{kind}.parquet").sort("person_id")
        same = same and one.equals(other)
    return same


def jvm_options() -> None:
    """Give the Spark child's JVM the driver memory asked for (before pyspark starts it)."""
    memory = os.environ.get("BENCH_SPARK_DRIVER_MEMORY")
    if memory:
        os.environ["PYSPARK_SUBMIT_ARGS"] = f"--driver-memory {memory} pyspark-shell"
