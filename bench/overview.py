"""The UI's overview page at a million persons: p50/p95 of GET /ui/, against a fresh
installation's page (the baseline), and the one-off count of a build's summary.

    python bench/overview.py           # 1M persons, 20M touchpoints (bench/matrix.py's data)
    python bench/overview.py --requests 100 --persons 100000 --touchpoints 2000000

The event log is bench/matrix.py's (generated once under ``bench/data/``). The rest is
set up as dmp keeps it: the Redis counters of persons per tier, a matrix build's manifest
and funnel (computed from the persons and stage records), 50 segments with 20 run
records, 20 destinations with 200 sync reports each, and a marketer who logs in.
Target: p95 <= 300 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from matrix import AS_OF, data_folder, generate  # noqa: E402  (bench/ is the script's folder)

from dmp.access.users import Role, add_user  # noqa: E402
from dmp.app import create_app  # noqa: E402
from dmp.config import load_config  # noqa: E402
from dmp.matrix import snapshots, summary  # noqa: E402
from dmp.matrix.sources import event_files  # noqa: E402
from dmp.membership import definitions  # noqa: E402
from dmp.storage import keyspace, redisserver  # noqa: E402
from exporters import reports, settings  # noqa: E402
from segments.definition import load_definitions  # noqa: E402
from segments.funnel import build_funnel  # noqa: E402

TARGET_MS = 300.0
PASSWORD = "bench bench bench"


def setup_redis(r, data: Path, folder: Path) -> None:
    """Store the counters, segments, run records, destinations and reports."""
    persons = pl.read_parquet(data / "persons.parquet", columns=["tier"])
    tiers = dict(persons.group_by("tier").len().iter_rows())
    r.hset(keyspace.STATS, mapping={f"persons:{t}": n for t, n in tiers.items()})
    r.hset(keyspace.STATS, "events_aggregate", 3_000_000)
    text = "\n".join(
        f"- id: seg-{i:02d}\n  name: Segment {i} with a rather long name for a list\n"
        f"  where: {{score: {{gte: {i}}}}}"
        for i in range(50)
    )
    definitions.apply_definitions(r, load_definitions(text, "bench.yaml"))
    sizes = {f"seg-{i:02d}": 1_000_000 - i * 19_000 for i in range(50)}
    for n in range(20):
        record = {
            "run_id": f"r{n}",
            "as_of": AS_OF,
            "matrix": "m",
            "incremental": True,
            "recounted": 1000,
            "versions": {},
            "members": sizes,
            "entered": 1234,
            "left": 56,
            "seconds": 12.5,
            "failed": {},
        }
        r.lpush(keyspace.SEGMENT_RUNS, json.dumps(record))
    for d in range(20):
        name = f"dest-{d:02d}"
        settings.save(
            r, settings.validate(r, name, "file", ["seg-00"], 900, {"folder": str(folder)})
        )
        for k in range(200):
            parts = [reports.SegmentReport(f"seg-{i:02d}", added=100, removed=3) for i in range(50)]
            reports.keep(r, reports.SyncReport(name, "file", AS_OF + k, segments=parts))


def setup_build(config, data: Path) -> None:
    """Write a build's manifest and funnel (from the persons and stage records)."""
    events = config.events_dir
    events.parent.mkdir(parents=True, exist_ok=True)
    if not events.exists():
        events.symlink_to(data / "events")
    rows = pl.read_parquet(data / "persons.parquet", columns=["person_id", "tier", "first_seen"])
    history = pl.read_parquet(data / "history.parquet")
    latest = history.group_by("person_id").agg(pl.col("stage").last(), pl.col("at").last())
    rows = rows.join(latest, on="person_id", how="left").select(
        "person_id",
        "tier",
        pl.col("stage").fill_null("lead"),
        stage_since=pl.col("at"),
        first_seen="first_seen",
    )
    folder = snapshots.matrix_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    snap = folder / "matrix-bench.parquet"
    snap.write_bytes(b"")
    manifest = {"as_of": AS_OF, "files": event_files(events), "snapshot": snap.name}
    snapshots.manifest_path(snap).write_text(json.dumps(manifest))
    snapshots.funnel_path(snap).write_text(json.dumps(build_funnel(rows, history, AS_OF)))
    (folder / "LATEST").write_text(snap.name + "\n")


def timed(client, n: int) -> list[float]:
    """Return the milliseconds of ``n`` GET /ui/."""
    out = []
    for _ in range(n):
        started = time.perf_counter()
        res = client.get("/ui/", headers={"Accept-Language": "de"})
        out.append((time.perf_counter() - started) * 1000)
        assert res.status_code == 200, res.status_code
    return out


def logged_in(app, r):
    """Return a test client logged in as a marketer."""
    add_user(r, "bench@acme.de", PASSWORD, Role.MARKETER, replace=True)
    client = app.test_client()
    page = client.get("/ui/login").get_data(as_text=True)
    token = page.split('name="csrf-token" content="')[1].split('"')[0]
    res = client.post(
        "/ui/login", data={"email": "bench@acme.de", "password": PASSWORD, "csrf_token": token}
    )
    assert res.status_code == 303
    return client


def p(values: list[float], q: float) -> float:
    """Return the ``q`` quantile of ``values``."""
    return statistics.quantiles(values, n=100)[int(q * 100) - 1]


def main() -> None:
    """Measure the overview fresh, then at scale; print both and check the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=1_000_000)
    parser.add_argument("--touchpoints", type=int, default=20_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--data", type=Path, help="a folder bench/matrix.py generated")
    args = parser.parse_args()
    data = args.data or data_folder(args.persons, args.touchpoints, 7)
    if not (data / "events").exists():
        generate(data, args.persons, args.touchpoints, 7)
    with tempfile.TemporaryDirectory() as tmp:
        server = redisserver.attach_embedded(Path(tmp) / "redis")
        config = load_config({"redis_url": server.url, "data_dir": Path(tmp) / "data"}, env={})
        app = create_app(config)
        r = redisserver.connect(server.url)
        client = logged_in(app, r)
        fresh = timed(client, args.requests)
        setup_redis(r, data, Path(tmp) / "out")
        setup_build(config, data)
        started = time.perf_counter()
        found = summary.latest_summary(config, inline_bytes=1 << 40)  # the one-off count
        count_s = time.perf_counter() - started
        scaled = timed(client, args.requests)
        app.extensions["dmp"].appender.close()
    print(f"summary count (once per build, all {len(found['days'])} days new): {count_s:.2f} s")
    print(f"{'page':<28}{'p50 ms':>10}{'p95 ms':>10}")
    for name, ms in (("fresh installation", fresh), (f"{args.persons:,} persons", scaled)):
        print(f"{name:<28}{p(ms, 0.5):>10.1f}{p(ms, 0.95):>10.1f}")
    ok = p(scaled, 0.95) <= TARGET_MS
    print(f"target p95 <= {TARGET_MS:.0f} ms: {'met' if ok else 'MISSED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
