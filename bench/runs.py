"""Segment runs end to end: full against incremental, as the worker's schedule makes them.

    python bench/runs.py --persons 20000              # makes the data with dmp synth once
    python bench/runs.py --data-dir DIR --rounds 5    # a data dir filled before

On a data dir filled by ``dmp synth`` (kept under ``bench/data/synth-<persons>``), with the
50 mixed segments applied, each round times:

- **full**: ``builds.build`` from scratch, then ``runs.run(full=True)``;
- **incremental, no new data**: what the schedule does every minute when nothing came in
  (time moves: windows close, scores decay);
- **incremental, after a batch**: ``--touch`` visitors (half of them known persons) send a
  page view each through the real ingest path, then an incremental build and run, what
  the schedule does within a second of new data.

Each is split into the matrix build and the segment run (evaluate, write the membership,
counts and changes, move the lookup sets). The incremental steps are compared with the
full one of the same round (medians over rounds).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runlog import append, commit  # noqa: E402  (bench/ is the script's folder)

from dmp.config import load_config  # noqa: E402
from dmp.ingest import stream  # noqa: E402
from dmp.ingest.worker import Worker  # noqa: E402
from dmp.matrix import builds  # noqa: E402
from dmp.membership import definitions, runs  # noqa: E402
from dmp.records import Hit  # noqa: E402
from dmp.storage import redisserver  # noqa: E402
from dmp.synth import example_segments  # noqa: E402
from segments.definition import parse_definition  # noqa: E402


def touch(r, config, n: int, known: list[str]) -> None:
    """Send one page view for each of n visitors (half known cookies, half new) and ingest."""
    now = int(time.time() * 1000)
    hits = [
        Hit(
            event_id=uuid.uuid4().hex,
            site_id="bench",
            source="pixel",
            type="page",
            event="page",
            received_at=now,
            timestamp=now,
            uid=known[i % len(known)] if i % 2 == 0 else f"bench{uuid.uuid4().hex[:17]}",
            consent={"analytics": True, "ads": True},
            url="https://bench.test/pricing",
            topics=["crm"],
        )
        for i in range(n)
    ]
    stream.enqueue(r, hits, {}, atomic=True)
    Worker(r, config).run(once=True)


def timed(r, config, *, full: bool) -> dict:
    started = time.perf_counter()
    built = builds.build(r, config, incremental=not full)
    ran = runs.run(r, config, full=full, build_matrix=False)
    return {
        "build_s": built.seconds,
        "run_s": ran.seconds,
        "recounted": ran.recounted,
        "total_s": time.perf_counter() - started,
        "persons": built.persons,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--persons", type=int, default=20_000)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--touch", type=int, default=1000)
    args = parser.parse_args()
    data_dir = args.data_dir or ROOT / "bench" / "data" / f"synth-{args.persons}"
    if not (data_dir / "events").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "dmp",
                "--data-dir",
                str(data_dir),
                "synth",
                "--persons",
                str(args.persons),
                "--days",
                "90",
            ],
            check=True,
        )
    config = load_config({"data_dir": data_dir})
    server = redisserver.attach_embedded(data_dir)
    r = redisserver.connect(server.url)
    definitions.apply_definitions(r, [parse_definition(d) for d in example_segments(50)])
    known = [k.split(":", 3)[3] for k in r.scan_iter(match="dmp:id:uid:*", count=1000)]
    rounds = []
    for n in range(args.rounds):
        full = timed(r, config, full=True)
        idle = timed(r, config, full=False)
        touch(r, config, args.touch, known)
        batch = timed(r, config, full=False)
        rounds.append({"full": full, "idle": idle, "batch": batch})
        print(
            f"round {n + 1}: "
            + "  ".join(
                f"{k} {v['build_s']:.2f}+{v['run_s']:.2f} s ({v['recounted']:,} recounted)"
                for k, v in rounds[-1].items()
            ),
            flush=True,
        )
    persons = rounds[-1]["full"]["persons"]
    print(
        f"\n{persons:,} persons, 50 segments, {args.touch:,} visitors per batch, "
        f"{len(rounds)} rounds (medians)"
    )
    base = statistics.median(x["full"]["total_s"] for x in rounds)
    print(f"{'':<22} {'build s':>8} {'run s':>7} {'total s':>8} {'× full':>7}")
    for kind, label in (
        ("full", "full"),
        ("idle", "incremental, no data"),
        ("batch", "incremental, batch"),
    ):
        b = statistics.median(x[kind]["build_s"] for x in rounds)
        s = statistics.median(x[kind]["run_s"] for x in rounds)
        t = statistics.median(x[kind]["total_s"] for x in rounds)
        print(f"{label:<22} {b:8.2f} {s:7.2f} {t:8.2f} {t / base:7.2f}")
    r.close()
    redisserver.stop_if_last(server)
    append(
        "runs",
        {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": commit(),
            "host": platform.node(),
            "persons": persons,
            "touch": args.touch,
            "rounds": rounds,
        },
    )
    print(json.dumps({"persons": persons}))


if __name__ == "__main__":
    main()
