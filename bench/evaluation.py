"""Segment evaluation: 50 segments of mixed shapes, polars (dmp's evaluator) against the
same segments as one DuckDB query.

    python bench/evaluation.py                          # 1M persons, 20M touchpoints, 3 runs
    python bench/evaluation.py --persons 50000 --touchpoints 1000000 --runs 1   # quick check

Input: the matrix benchmark's data (``bench/data/matrix-…``: a 90-day event log in dmp's
layout) and the 1M-person matrix dmp built from it (``out-streaming.parquet``); both are
made by ``bench/matrix.py`` first if missing. The segments are
:func:`dmp.synth.example_segments` (comparisons, interests, channels, traits, windowed
and all-time ``did`` counts, sequences, nesting). Each engine runs in its own process, in
turn: it evaluates every segment over every person (one Boolean column per segment) and
writes the table as Parquet; wall time and peak RSS are recorded and the two tables are
checked to be equal. Results go to ``bench/results/evaluation.jsonl``.
"""

from __future__ import annotations

import argparse
import json
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

from matrix import AS_OF, EVENTS_GLOB, data_folder  # noqa: E402  (bench/ is the script's folder)
from runlog import append, commit, measure_child  # noqa: E402

from dmp.synth import example_segments  # noqa: E402
from segments.definition import parse_definition  # noqa: E402


def trees(n: int) -> dict:
    return {d["id"]: parse_definition(d).where for d in example_segments(n)}


def run_polars(folder: Path, n: int) -> None:
    """Child: every segment with dmp's evaluator, written as Parquet."""
    from dmp.matrix.sources import read_touchpoints
    from segments.evaluator import evaluate

    started = time.perf_counter()
    flags = evaluate(
        pl.scan_parquet(folder / "out-streaming.parquet"),
        read_touchpoints(folder / "events", {}),
        trees(n),
        AS_OF,
    )
    out = folder / "segments-polars.parquet"
    flags.collect(engine="streaming").write_parquet(out)
    print(json.dumps({"seconds": time.perf_counter() - started, "out": str(out)}))


def run_duckdb(folder: Path, n: int) -> None:
    """Child: the same segments as one DuckDB query, written as Parquet."""
    import duckdb

    from segments.matrix import PROFILE_TRAITS
    from segments.sql import segments_sql

    started = time.perf_counter()
    events = (
        '(SELECT person_id, epoch_ms("timestamp") AS "timestamp", event, type, source, '
        "channel, site_id, url, title, topics, properties FROM read_parquet("
        f"'{folder}/{EVENTS_GLOB}', hive_partitioning = true) WHERE person_id IS NOT NULL)"
    )
    matrix = f"read_parquet('{folder}/out-streaming.parquet')"
    sql = segments_sql(trees(n), AS_OF, matrix=matrix, touchpoints=events, profile=PROFILE_TRAITS)
    out = folder / "segments-duckdb.parquet"
    duckdb.connect().execute(f"COPY ({sql}) TO '{out}' (FORMAT parquet, COMPRESSION zstd)")
    print(json.dumps({"seconds": time.perf_counter() - started, "out": str(out)}))


def child(engine: str, folder: Path, n: int) -> dict:
    """Run one engine in a fresh process; return its time and peak RSS."""
    args = [
        sys.executable,
        __file__,
        "--child",
        engine,
        "--data",
        str(folder),
        "--segments",
        str(n),
    ]
    report = measure_child(args, engine)
    return {
        "engine": engine,
        "eval_s": report["seconds"],
        "process_s": report["process_s"],
        "peak_rss_mb": report["peak_rss_mb"],
        "out": report["out"],
    }


def members(path: str) -> dict[str, int]:
    """Return each segment's member count and a digest of who the members are."""
    frame = pl.read_parquet(path).sort("person_id")
    return {c: int(frame[c].sum()) for c in frame.columns[1:]} | {
        "who": int(frame.hash_rows().sum())  # person ids with their flags
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--touchpoints", type=int, default=20_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--segments", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run = run_duckdb if args.child == "duckdb" else run_polars
        run(args.data, args.segments)
        return
    folder = data_folder(args.persons, args.touchpoints, args.seed)
    if not (folder / "out-streaming.parquet").exists():
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench" / "matrix.py"),
                "--persons",
                str(args.persons),
                "--touchpoints",
                str(args.touchpoints),
                "--seed",
                str(args.seed),
                "--runs",
                "1",
                "--engines",
                "streaming",
            ],
            check=True,
        )
    engines = ["polars", "duckdb"]
    results: dict[str, list[dict]] = {e: [] for e in engines}
    for run in range(args.runs):
        for engine in engines[run % 2 :] + engines[: run % 2]:
            result = child(engine, folder, args.segments)
            results[engine].append(result)
            print(
                f"run {run + 1} {engine:<7} {result['eval_s']:6.1f} s  "
                f"peak RSS {result['peak_rss_mb']:7,.0f} MB"
            )
    found = {e: members(results[e][-1]["out"]) for e in engines}
    same = found["polars"] == found["duckdb"]
    sizes = sorted(v for k, v in found["polars"].items() if k != "who")
    print(
        f"\n{args.segments} segments over {args.persons:,} persons and {args.touchpoints:,} "
        f"touchpoints, {args.runs} runs, {os.cpu_count()} cores; the members agree: {same}; "
        f"sizes from {sizes[0]:,} to {sizes[-1]:,}"
    )
    t0 = statistics.median(r["eval_s"] for r in results["duckdb"])
    m0 = statistics.median(r["peak_rss_mb"] for r in results["duckdb"])
    print(f"{'engine':<8} {'median s':>9} {'× duckdb':>9} {'peak MB':>9} {'× duckdb':>9}")
    for engine in engines:
        t = statistics.median(r["eval_s"] for r in results[engine])
        m = statistics.median(r["peak_rss_mb"] for r in results[engine])
        print(f"{engine:<8} {t:9.1f} {t / t0:9.2f} {m:9,.0f} {m / m0:9.2f}")
    append(
        "evaluation",
        {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": commit(),
            "host": platform.node(),
            "persons": args.persons,
            "touchpoints": args.touchpoints,
            "segments": args.segments,
            "same": same,
            "sizes": found["polars"],
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
