"""The Spark engine against polars: a full matrix build and a run of the 50 example
segments on the same data, side by side (issue 17).

    python bench/spark.py --data matrix --rounds 3     # 1M persons, 20M touchpoints
    python bench/spark.py --data matrix --persons 20000 --touchpoints 400000 --rounds 1
    python bench/spark.py --persons 5000               # dmp synth data, through Redis

``--data matrix`` (bench/sparkmatrix.py) runs the compute path on bench/matrix.py's
generated data (persons and history from Parquet files, not Redis), one fresh child
process per engine and round, alternating; the default (``--data synth``) runs
``builds.build`` and ``runs.run`` on ``dmp synth`` data in Redis and the data dir.

Each engine runs in a fresh child process (``--child polars|spark``), which times
``builds.build`` (full, one as-of time for all) and ``runs.run(full=True)`` per round and
reports the medians and its peak memory: the Python process's VmHWM and, for Spark, the
JVM's (the ``java`` child of the driver; Spark ``local[2]``). The ratio is Spark's time
over polars'; the point is the path out (the same answers on a cluster), not winning on
one box. Both engines' snapshots are compared before the figures are kept.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sparkmatrix  # noqa: E402  (bench/ is the script's folder)
from matrix import data_folder  # noqa: E402
from runlog import append, commit  # noqa: E402

from dmp.config import load_config  # noqa: E402
from dmp.matrix import builds  # noqa: E402
from dmp.membership import definitions, runs  # noqa: E402
from dmp.storage import redisserver  # noqa: E402
from dmp.synth import example_segments  # noqa: E402
from segments.definition import parse_definition  # noqa: E402


def peak_kb(pid: int) -> int:
    """Return a process's peak resident memory (VmHWM) in KB, 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def java_children(pid: int) -> list[int]:
    """Return the pids of the java processes among a process's children."""
    found = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        if "java" in Path(f"/proc/{child}/comm").read_text():
            found.append(int(child))
    return found


def child(engine: str, data_dir: Path, rounds: int, as_of: int) -> None:
    """Child process: ``rounds`` full builds and full runs on one engine; print figures."""
    overrides = {"data_dir": data_dir, "engine": engine, "spark_master": "local[2]"}
    config = load_config(overrides)
    server = redisserver.attach_embedded(data_dir)
    r = redisserver.connect(server.url)
    timings = []
    for _ in range(rounds):
        started = time.perf_counter()
        built = builds.build(r, config, as_of)
        ran = runs.run(r, config, full=True, build_matrix=False)
        timings.append(
            {
                "build_s": built.seconds,
                "run_s": ran.seconds,
                "total_s": time.perf_counter() - started,
            }
        )
    import os

    jvm = [peak_kb(p) for p in java_children(os.getpid())]
    print(
        json.dumps(
            {
                "build_s": statistics.median(t["build_s"] for t in timings),
                "run_s": statistics.median(t["run_s"] for t in timings),
                "total_s": statistics.median(t["total_s"] for t in timings),
                "python_peak_mb": peak_kb(os.getpid()) // 1024,
                "jvm_peak_mb": max(jvm, default=0) // 1024,
                "snapshot": str(built.path),
                "members": sum(ran.members.values()),
            }
        )
    )


def matrix_child(engine: str, folder: Path) -> None:
    """Child process: one build and run on bench/matrix.py's data; print the figures."""
    import os

    if engine == "spark":
        report = sparkmatrix.run_spark(folder, "local[2]")
    else:
        report = sparkmatrix.run_polars(folder)
    jvm = [peak_kb(p) for p in java_children(os.getpid())]
    report["python_peak_mb"] = peak_kb(os.getpid()) // 1024
    report["jvm_peak_mb"] = max(jvm, default=0) // 1024
    print(json.dumps(report))


def matrix_bench(args: argparse.Namespace) -> None:
    """Polars and Spark alternating on bench/matrix.py's data; check, record, print."""
    folder = args.data_dir or data_folder(args.persons, args.touchpoints, args.seed)
    if not (folder / "persons.parquet").exists():
        generate = [sys.executable, str(ROOT / "bench" / "matrix.py"), "--child", "generate"]
        generate += ["--data", str(folder), "--persons", str(args.persons)]
        generate += ["--touchpoints", str(args.touchpoints), "--seed", str(args.seed)]
        subprocess.run(generate, check=True)
    engines = ["polars", "spark"]
    rounds: dict[str, list[dict]] = {e: [] for e in engines}
    for n in range(args.rounds):
        for engine in engines if n % 2 == 0 else engines[::-1]:
            argv = [sys.executable, __file__, "--data", "matrix", "--child", engine]
            argv += ["--data-dir", str(folder)]
            out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
            rounds[engine].append(json.loads(out.strip().splitlines()[-1]))
            print(f"round {n + 1} {engine}: {rounds[engine][-1]}", flush=True)
        sums = {e: sparkmatrix.summary(folder, e) for e in engines}
        assert sparkmatrix.agree(sums["polars"], sums["spark"]), sums
    identical = sparkmatrix.identical(folder)
    figures = {e: _medians(rounds[e]) for e in engines}
    touchpoints = sums["polars"]["touchpoints"]
    build = figures["spark"]["build_s"]
    record = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "load_1min": os.getloadavg()[0],
        "data": folder.name,
        "persons": sums["polars"]["rows"],
        "touchpoints": touchpoints,
        "rounds": args.rounds,
        "polars": figures["polars"],
        "spark_local2": figures["spark"],
        "ratio_build": round(build / figures["polars"]["build_s"], 2),
        "ratio_run": round(figures["spark"]["run_s"] / figures["polars"]["run_s"], 2),
        "ratio_total": round(figures["spark"]["total_s"] / figures["polars"]["total_s"], 2),
        "spark_build_touchpoints_per_core_s": round(touchpoints / build / 2),
        "agree": True,
        "identical": identical,
        "members": sum(sums["polars"]["members"].values()),
        "raw": rounds,
    }
    append("spark", record)
    print(json.dumps({k: v for k, v in record.items() if k != "raw"}, indent=1))


def _medians(rounds: list[dict]) -> dict[str, float]:
    """Return the medians of one engine's rounds (times in s, peaks in MB)."""
    keys = ["build_s", "run_s", "python_peak_mb", "jvm_peak_mb", "session_s", "stages"]
    found = {k: statistics.median(r[k] for r in rounds) for k in keys if k in rounds[0]}
    found["total_s"] = statistics.median(r["build_s"] + r["run_s"] for r in rounds)
    return {k: round(v, 2) for k, v in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", choices=["synth", "matrix"], default="synth")
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--touchpoints", type=int, default=20_000_000, help="--data matrix")
    parser.add_argument("--seed", type=int, default=7, help="--data matrix")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--child", choices=["polars", "spark"])
    parser.add_argument("--as-of", type=int, default=0)
    args = parser.parse_args()
    if args.data == "matrix":
        sparkmatrix.jvm_options()
        if args.child:
            matrix_child(args.child, args.data_dir)
        else:
            matrix_bench(args)
        return
    data_dir = args.data_dir or ROOT / "bench" / "data" / f"synth-{args.persons}"
    if args.child:
        child(args.child, data_dir, args.rounds, args.as_of)
        return
    if not (data_dir / "events").exists():
        synth = ["synth", "--persons", str(args.persons), "--days", "90"]
        subprocess.run(
            [sys.executable, "-m", "dmp", "--data-dir", str(data_dir), *synth], check=True
        )
    server = redisserver.attach_embedded(data_dir)
    r = redisserver.connect(server.url)
    definitions.apply_definitions(r, [parse_definition(d) for d in example_segments(50)])
    as_of = int(time.time() * 1000)
    figures = {}
    for engine in ("polars", "spark"):
        argv = [sys.executable, __file__, "--child", engine, "--data-dir", str(data_dir)]
        argv += ["--rounds", str(args.rounds), "--as-of", str(as_of)]
        out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
        figures[engine] = json.loads(out.strip().splitlines()[-1])
    import polars as pl

    same = pl.read_parquet(figures["polars"]["snapshot"]).equals(
        pl.read_parquet(figures["spark"]["snapshot"])
    )
    assert same, "the engines' snapshots differ"
    assert figures["polars"]["members"] == figures["spark"]["members"] > 0
    ratio = figures["spark"]["total_s"] / figures["polars"]["total_s"]
    record = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "machine": f"{platform.machine()} {platform.processor()}",
        "persons": args.persons,
        "rounds": args.rounds,
        "polars": {k: v for k, v in figures["polars"].items() if k != "snapshot"},
        "spark_local2": {k: v for k, v in figures["spark"].items() if k != "snapshot"},
        "ratio_spark_over_polars": round(ratio, 2),
    }
    append("spark", record)
    print(json.dumps(record, indent=1))
    redisserver.stop_if_last(server)


if __name__ == "__main__":
    main()
