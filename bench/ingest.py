"""Worker ingest: stream → dedup → identity → profile → Parquet, on one core.

    python bench/ingest.py [--events 1000000] [--browsers 50000] [--users 20000] [--runs 1]

Fills a fresh embedded Redis with a deterministic, realistic mix of hits, then times
``Worker.run(once=True)`` pinned to one core (Redis runs where the OS puts it). The mix: 70 %
consented pixel page views from ``--browsers`` cookies, 15 % unconsented page views
(aggregate only), 10 % server-side track calls from ``--users`` user ids, 5 % identify
calls that link a cookie to an email (and a third of them a phone). It checks the outcome
too: every consented event in Parquet exactly once, the counters matching.

The baseline printed beside it is the cost of only reading and decoding the same entries
(XREADGROUP + JSON), the floor any worker design pays.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from dmp import keyspace, redisserver, stream
from dmp.config import load_config
from dmp.eventlog import scan_events
from dmp.records import Hit
from dmp.worker import Worker, status

AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36",
]
TOPICS = ["crm", "erp", "cloud", "security", "datenschutz", "ki", "webinar", "preise"]
CONSENTED = {"analytics": True, "ads": True, "email": False}


def make_hits(n: int, browsers: int, users: int, seed: int = 7) -> list[Hit]:
    """Return ``n`` deterministic hits in the benchmark's mix."""
    rnd = random.Random(seed)
    start = int(datetime(2026, 11, 2, tzinfo=UTC).timestamp() * 1000)
    hits = []
    for i in range(n):
        ts = start + i * 600  # 1M events span a week
        uid = f"b{rnd.randrange(browsers):07d}xxxxxxxxxxxx"
        page = rnd.randrange(400)
        base = dict(event_id=f"e{i:012d}", site_id="acme", received_at=ts, timestamp=ts)
        roll = rnd.random()
        if roll < 0.70:
            hits.append(Hit(
                **base, source="pixel", type="page", event="page", consent=CONSENTED, uid=uid,
                url=f"https://acme.de/p/{page}", title=f"Seite {page}",
                topics=[TOPICS[page % 8], TOPICS[(page // 8) % 8]], ip="203.0.113.0",
                user_agent=AGENTS[page % 5],
            ))  # fmt: skip
        elif roll < 0.85:
            hits.append(Hit(
                **base, source="pixel", type="page", event="page", consent={"analytics": False},
                url=f"https://acme.de/p/{page}", topics=[TOPICS[page % 8]],
                user_agent=AGENTS[page % 5],
            ))  # fmt: skip
        elif roll < 0.95:
            hits.append(Hit(
                **base, source="api", type="track", event="Demo Requested", channel="server",
                user_id=f"u{rnd.randrange(users):06d}", properties={"plan": "pro", "seats": 5},
            ))  # fmt: skip
        else:
            who = rnd.randrange(browsers)
            traits = {"email": f"person{who}@firma{who % 997}.de", "firstName": "Kim"}
            if who % 3 == 0:
                traits["phone"] = f"+49 30 {who:07d}"
            hits.append(Hit(
                **base, source="tag", type="identify", event="identify", consent=CONSENTED,
                uid=f"b{who:07d}xxxxxxxxxxxx", traits=traits, user_agent=AGENTS[who % 5],
            ))  # fmt: skip
    return hits


def fill(r, hits: list[Hit]) -> None:
    """Append hits to the stream as collectors do, in chunks."""
    for start in range(0, len(hits), 5000):
        stream.enqueue(r, hits[start : start + 5000], {}, atomic=False)


def decode_only(r, count: int) -> float:
    """Return seconds to read and decode every entry once (the baseline floor)."""
    stream.ensure_group(r)
    r.xgroup_create(keyspace.STREAM, "bench-baseline", id="0")
    started = time.perf_counter()
    seen = 0
    while seen < count:
        reply = r.xreadgroup("bench-baseline", "b", {keyspace.STREAM: ">"}, count=2000)
        if not reply:
            break
        entries = reply[0][1]
        Hit.many_from_json([f["h"].encode() for _, f in entries])
        seen += len(entries)
    elapsed = time.perf_counter() - started
    r.xgroup_destroy(keyspace.STREAM, "bench-baseline")
    return elapsed


def run_once(args: argparse.Namespace, hits: list[Hit]) -> dict:
    """Ingest ``hits`` on a fresh embedded Redis; return the figures."""
    root = Path(tempfile.mkdtemp(prefix="dmp-ingest-"))
    server = redisserver.attach_embedded(root)
    r = redisserver.connect(server.url)
    try:
        fill(r, hits)
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[0]})  # one core for the worker; Redis is not pinned
        baseline = decode_only(r, len(hits))
        config = load_config({"redis_url": server.url, "data_dir": root / "data"}, env={})
        worker = Worker(r, config)
        started = time.perf_counter()
        worker.run(once=True)
        elapsed = time.perf_counter() - started
        os.sched_setaffinity(0, set(cores))
        state = status(r)
        rows = scan_events(config.events_dir).select(pl.len()).collect().item()
        unique = scan_events(config.events_dir).select(pl.col("event_id").n_unique())
        consented = sum(1 for h in hits if h.source != "pixel" or h.uid)
        ok = rows == consented == state["events_stored"] == unique.collect().item()
        return {
            "events": len(hits), "seconds": round(elapsed, 2),
            "events_per_s": round(len(hits) / elapsed),
            "decode_only_per_s": round(len(hits) / baseline),
            "stored": rows, "aggregate": state["events_aggregate"],
            "persons": state["persons"], "pending": state["pending"], "exactly_once": ok,
        }  # fmt: skip
    finally:
        r.close()
        redisserver.stop_if_last(server)
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--browsers", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    hits = make_hits(args.events, args.browsers, args.users)
    results = []
    for run in range(args.runs):
        result = run_once(args, hits)
        results.append(result)
        print(f"run {run + 1}: {json.dumps(result)}")
    rate = statistics.median(r["events_per_s"] for r in results)
    floor = statistics.median(r["decode_only_per_s"] for r in results)
    summary = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "events": args.events,
        "runs": args.runs, "median_events_per_s": rate, "decode_only_per_s": floor,
        "share_of_decode_floor": round(rate / floor, 2),
        "exactly_once": all(r["exactly_once"] for r in results),
    }  # fmt: skip
    print(json.dumps(summary, indent=2))
    print(f"target ≥ 20,000 events/s on one core: {'met' if rate >= 20_000 else 'MISSED'}")
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    with open(out / "ingest.jsonl", "a") as fh:
        fh.write(json.dumps(summary) + "\n")


if __name__ == "__main__":
    main()
