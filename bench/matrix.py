"""Matrix build: polars (dmp's build) against the same aggregates as one DuckDB query.

    python bench/matrix.py                                  # 1M persons, 20M touchpoints, 3 runs
    python bench/matrix.py --persons 100000 --touchpoints 2000000 --runs 1   # a quick check
    python bench/matrix.py --engines streaming,in-memory,duckdb

The data (persons, stage records and a 90-day event log in dmp's own Parquet layout and
schema) is generated once per size and seed under ``bench/data/`` and reused. Each
engine runs in its own process, in turn, ``--runs`` times: the wall time of the build
(read, compute, write the result as Parquet) and the process's peak RSS are recorded.
Both outputs are then checked to hold the same matrix (row count, score sums, stages,
counts). Results are appended to ``bench/results/matrix.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runlog import append, commit, measure_child  # noqa: E402  (bench/ is the script's folder)

from dmp.records import EVENT_SCHEMA  # noqa: E402
from dmp.storage.parquetfiles import write_parquet_files  # noqa: E402
from dmp.synth import TOPICS, catalog_yaml  # noqa: E402
from segments.content import parse_catalog  # noqa: E402
from segments.matrix import PERSON_SCHEMA  # noqa: E402
from segments.scoring import DAY_MS, default_model_text, parse_model  # noqa: E402
from segments.stages import STAGE_HISTORY_SCHEMA  # noqa: E402

AS_OF = 1_790_000_000_000
DAYS = 90
EVENTS_GLOB = "events/dt=*/part-*.parquet"


# The data's layout: bumped when generate() changes, so that no older data is reused.
# 2: person ids as dmp mints them (16 hex digits), no longer "p" and 15 decimal digits.
# 3: each day's events written as dmp's event log writes them (pyarrow, its schema, so
#    every column dictionary-encoded where it pays), no longer by polars (which writes a
#    list's texts plain: the topics then took twice as long to read).
LAYOUT = 3


def data_folder(persons: int, touchpoints: int, seed: int) -> Path:
    """Return where the data of this size and seed is generated (and kept)."""
    return ROOT / "bench" / "data" / f"matrix-v{LAYOUT}-{persons}-{touchpoints}-{seed}"


def person_ids(persons: int, seed: int) -> pl.Series:
    """Return the persons' ids, as dmp mints them: 16 hex digits, random-looking."""
    numbers = pl.int_range(0, persons, eager=True, dtype=pl.UInt64).hash(seed * 1000)
    ids = pl.Series("person_id", [f"{n:016x}" for n in numbers.to_list()], dtype=pl.Utf8)
    if ids.n_unique() != persons:
        raise SystemExit(f"two of {persons:,} generated person ids are equal: another seed")
    return ids


def rand(salt: int, seed: int) -> pl.Expr:
    """A pseudo-random u64 per row, from the row index."""
    return pl.col("i").hash(seed * 1000 + salt)


def pick(options: list, salt: int, seed: int) -> pl.Expr:
    """One of ``options`` per row, uniformly."""
    return pl.lit(pl.Series(options)).get((rand(salt, seed) % len(options)).cast(pl.Int64))


def generate(folder: Path, persons: int, touchpoints: int, seed: int) -> None:
    """Write persons.parquet, history.parquet and events/dt=*/part-0.parquet."""
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    ids = person_ids(persons, seed)
    people = (
        pl.DataFrame({"i": pl.int_range(0, persons, eager=True, dtype=pl.UInt64)})
        .with_columns(person_id=ids, roll=rand(1, seed) % 100)
        .with_columns(
            tier=pl.when(pl.col("roll") < 60)
            .then(pl.lit("low"))
            .when(pl.col("roll") < 85)
            .then(pl.lit("medium"))
            .otherwise(pl.lit("high")),
            email=pl.when(pl.col("roll") >= 60).then(pl.format("person{}@firma.example", "i")),
            contact=pl.when(pl.col("roll") >= 85)
            .then(pl.lit(["phone", "crm"]))
            .otherwise(pl.lit([], dtype=pl.List(pl.Utf8))),
            consents=pick(
                [
                    ["analytics"],
                    ["analytics", "ads"],
                    ["analytics", "ads", "email"],
                    ["analytics", "email"],
                ],
                2,
                seed,
            ),
            traits=pl.when(pl.col("roll") >= 60)
            .then(
                pl.concat_str(
                    pl.lit('{"job_title":"'),
                    pick(["Head of Marketing", "CMO", "Werkstudent", "IT-Leiter"], 3, seed),
                    pl.lit('","employees":'),
                    pick([8, 60, 250, 1200], 4, seed).cast(pl.Utf8),
                    pl.lit(',"country":"'),
                    pick(["DE", "AT", "CH", "NL"], 5, seed),
                    pl.lit('","company":"Firma '),
                    pl.col("i").cast(pl.Utf8),
                    pl.lit('"}'),
                )
            )
            .otherwise(pl.lit("{}")),
            first_seen=pl.lit(AS_OF - DAYS * DAY_MS)
            + (rand(6, seed) % (DAYS * DAY_MS)).cast(pl.Int64),
        )
        .select(list(PERSON_SCHEMA))
        .cast(PERSON_SCHEMA)  # type: ignore[arg-type]
    )
    people.write_parquet(folder / "persons.parquet")
    sales = people.filter(pl.col("tier") == "high").head(persons // 20)
    history = sales.select(
        "person_id",
        stage=pl.lit(pl.Series(["sal", "sql", "won", "lost"])).get(
            (pl.col("person_id").hash(seed) % 4).cast(pl.Int64)
        ),
        at=pl.lit(AS_OF - 10 * DAY_MS),
        source=pl.lit("crm"),
    ).cast(STAGE_HISTORY_SCHEMA)  # type: ignore[arg-type]
    history.write_parquet(folder / "history.parquet")
    event_schema = pl.from_arrow(EVENT_SCHEMA.empty_table()).schema  # type: ignore[union-attr]
    topic = pick(list(TOPICS), 13, seed)
    events = (
        pl.DataFrame({"i": pl.int_range(0, touchpoints, eager=True, dtype=pl.UInt64)})
        .with_columns(
            roll=rand(11, seed) % 100,
            person=(rand(12, seed) % persons).cast(pl.Int64),
            ms=pl.lit(AS_OF) - (rand(14, seed) % (DAYS * DAY_MS)).cast(pl.Int64),
        )
        .with_columns(
            event_id=pl.format("e{}", "i"),
            site_id=pl.lit("acme-software"),
            person_id=pl.lit(ids).gather(pl.col("person")),
            source=pl.when(pl.col("roll") < 90)
            .then(pl.lit("pixel"))
            .otherwise(pl.lit("newsletter")),
            type=pl.when(pl.col("roll") < 80).then(pl.lit("page")).otherwise(pl.lit("track")),
            event=pl.when(pl.col("roll") < 80)
            .then(pl.lit("page"))
            .when(pl.col("roll") < 85)
            .then(pl.lit("whitepaper_download"))
            .when(pl.col("roll") < 88)
            .then(pl.lit("webinar_signup"))
            .when(pl.col("roll") < 90)
            .then(pl.lit("demo_request"))
            .when(pl.col("roll") < 96)
            .then(pl.lit("open"))
            .when(pl.col("roll") < 99)
            .then(pl.lit("click"))
            .otherwise(pl.lit("unsubscribe")),
            channel=pl.when(pl.col("roll") < 90).then(pl.lit("web")).otherwise(pl.lit("email")),
            url=pl.when(pl.col("roll") < 80).then(
                pl.when(rand(15, seed) % 10 == 0)
                .then(pl.lit("https://www.acme-software.example/pricing"))
                .otherwise(
                    pl.format(
                        "https://www.acme-software.example/blog/{}/{}", topic, rand(16, seed) % 30
                    )
                )
            ),
            topics=pl.concat_list(topic),
            timestamp=pl.col("ms").cast(pl.Datetime("ms", "UTC")),
            received_at=pl.col("ms").cast(pl.Datetime("ms", "UTC")),
            dt=(pl.col("ms") // DAY_MS).cast(pl.Int32),
            is_bot=pl.lit(False),
        )
    )
    missing = [c for c in event_schema if c not in events.columns]
    events = events.with_columns(pl.lit(None).alias(c) for c in missing)
    events = events.select([*event_schema, "dt"]).cast(dict(event_schema))  # type: ignore[arg-type]
    for (day,), part in events.partition_by("dt", as_dict=True).items():
        name = datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d")
        path = folder / "events" / f"dt={name}" / "part-0.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        table = part.drop("dt").sort("timestamp").to_arrow().cast(EVENT_SCHEMA)
        write_parquet_files([table], [path])  # as dmp.ingest.eventlog writes a flush
    seconds = time.perf_counter() - started
    print(f"generated {persons:,} persons and {touchpoints:,} touchpoints in {seconds:.0f} s")


def polars_matrix(folder: Path) -> pl.LazyFrame:
    """Return the polars build of the generated data's matrix (lazy, as of AS_OF)."""
    from dmp.matrix.sources import read_touchpoints
    from segments.matrix import build_matrix

    model, catalog = parse_model(default_model_text()), parse_catalog(catalog_yaml())
    matrix, _ = build_matrix(
        pl.scan_parquet(folder / "persons.parquet"),
        read_touchpoints(folder / "events", {}),
        pl.scan_parquet(folder / "history.parquet"),
        model,
        catalog,
        AS_OF,
    )
    return matrix


def run_polars(folder: Path, engine: str) -> None:
    """Child process: build the matrix with polars and write it."""
    started = time.perf_counter()
    matrix = polars_matrix(folder)
    out = folder / f"out-{engine}.parquet"
    matrix.sink_parquet(out, engine=engine) if engine == "streaming" else matrix.collect(
        engine=engine
    ).write_parquet(out)
    print(json.dumps({"seconds": time.perf_counter() - started, "out": str(out)}))


def run_duckdb(folder: Path) -> None:
    """Child process: the same matrix as one DuckDB query, written as Parquet."""
    import duckdb

    from segments.sqlmatrix import matrix_sql

    started = time.perf_counter()
    model, catalog = parse_model(default_model_text()), parse_catalog(catalog_yaml())
    events = (
        '(SELECT person_id, epoch_ms("timestamp") AS "timestamp", event, type, source, '
        "channel, site_id, url, title, topics, properties FROM read_parquet("
        f"'{folder}/{EVENTS_GLOB}', hive_partitioning = true))"
    )
    sql = matrix_sql(
        model,
        catalog,
        AS_OF,
        persons=f"read_parquet('{folder}/persons.parquet')",
        touchpoints=events,
        history=f"read_parquet('{folder}/history.parquet')",
    )
    out = folder / "out-duckdb.parquet"
    duckdb.connect().execute(f"COPY ({sql}) TO '{out}' (FORMAT parquet, COMPRESSION zstd)")
    print(json.dumps({"seconds": time.perf_counter() - started, "out": str(out)}))


def child(engine: str, folder: Path) -> dict:
    """Run one engine in a fresh process; return its time and peak RSS."""
    args = [sys.executable, __file__, "--child", engine, "--data", str(folder)]
    report = measure_child(args, engine)
    return {
        "engine": engine,
        "build_s": report["seconds"],
        "process_s": report["process_s"],
        "peak_rss_mb": report["peak_rss_mb"],
        "out": report["out"],
    }


def summary(path: str) -> dict:
    """Return what two builds of the same matrix must agree on."""
    frame = pl.read_parquet(path)
    return {
        "rows": frame.height,
        "score": frame["score"].sum(),
        "touchpoints": int(frame["touchpoints_total"].sum()),
        "touchpoints_30d": int(frame["touchpoints_30d"].sum()),
        "stages": dict(sorted(frame.group_by("stage").len().iter_rows())),
        "next_content": frame["next_content"].n_unique(),
        "top_interest": dict(sorted(frame.group_by("top_interest").len().drop_nulls().iter_rows())),
    }


def agree(one: dict, other: dict) -> bool:
    """Return whether two summaries describe the same matrix (score sums up to rounding)."""
    exact = {k: v for k, v in one.items() if k != "score"}
    same = exact == {k: v for k, v in other.items() if k != "score"}
    return same and math.isclose(one["score"], other["score"], rel_tol=1e-7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--touchpoints", type=int, default=20_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--engines", default="streaming,duckdb", help="streaming, in-memory, duckdb"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "generate":
        generate(args.data, args.persons, args.touchpoints, args.seed)
        return
    if args.child:
        run_duckdb(args.data) if args.child == "duckdb" else run_polars(args.data, args.child)
        return
    folder = data_folder(args.persons, args.touchpoints, args.seed)
    if not (folder / "persons.parquet").exists():
        # In its own process: a child's peak RSS counts its parent's at the fork.
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "generate",
                "--data",
                str(folder),
                "--persons",
                str(args.persons),
                "--touchpoints",
                str(args.touchpoints),
                "--seed",
                str(args.seed),
            ],
            check=True,
        )
    engines = args.engines.split(",")
    results: dict[str, list[dict]] = {e: [] for e in engines}
    for run in range(args.runs):
        for engine in engines[run % len(engines) :] + engines[: run % len(engines)]:
            result = child(engine, folder)
            results[engine].append(result)
            print(
                f"run {run + 1} {engine:<10} {result['build_s']:6.1f} s  "
                f"peak RSS {result['peak_rss_mb']:7,.0f} MB"
            )
    sums = {e: summary(results[e][-1]["out"]) for e in engines}
    same = all(agree(s, sums[engines[0]]) for s in sums.values())
    print(
        f"\n{args.persons:,} persons, {args.touchpoints:,} touchpoints, {args.runs} runs, "
        f"{os.cpu_count()} cores; the outputs agree: {same}"
    )
    base = "duckdb" if "duckdb" in engines else engines[-1]
    t0 = statistics.median(r["build_s"] for r in results[base])
    m0 = statistics.median(r["peak_rss_mb"] for r in results[base])
    print(f"{'engine':<10} {'median s':>9} {'× ' + base:>9} {'peak MB':>9} {'× ' + base:>9}")
    for engine in engines:
        t = statistics.median(r["build_s"] for r in results[engine])
        m = statistics.median(r["peak_rss_mb"] for r in results[engine])
        print(f"{engine:<10} {t:9.1f} {t / t0:9.2f} {m:9,.0f} {m / m0:9.2f}")
    if not same:
        print(json.dumps(sums, indent=1))
    record = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "host": platform.node(),
        "persons": args.persons,
        "touchpoints": args.touchpoints,
        "same": same,
        "results": results,
    }
    append("matrix", record)


if __name__ == "__main__":
    main()
