"""Freshness: how soon a qualifying visit shows in the lookup, under a steady event load.

    python bench/freshness.py [--persons 2000] [--rate 1000] [--probes 40] [--segments 20]
                              [--flush-seconds S] [--data-dir DIR]

``dmp serve`` (two web processes and its ingest worker, whose segment schedule runs with
the default settings) on a fresh data dir, filled first by ``dmp synth`` and given
``--segments`` mixed segments (:func:`dmp.synth.example_segments`) plus ``fresh``:
``did: {event: page, url_contains: /qualify}``, shared with a partner key.

While a load thread sends ``--rate`` consented events/s through the Segment batch API
(batches of 50, paced, from 5,000 visitors of the run's own), a probe makes a new
visitor every few seconds (at random, not in step with the worker's flushes): one pixel
hit on ``/qualify`` with a new ``dmp_uid`` cookie and the ads consent, then a lookup
with the partner key every 50 ms until the answer names ``fresh``. Freshness is the
time from the pixel's answer to the first lookup that names it. Target: p95 ≤ 2 s (issue 18).

From the server's log of the probes' time it also reports the live lane's ticks (how
many, persons per tick, seconds) and the flushes (events per flush, seconds to write):
where a visit's wait went.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pixel import Target, start, stop, stop_redis, wait_up  # noqa: E402
from runlog import append, commit  # noqa: E402

from dmp.config import load_config  # noqa: E402
from dmp.matrix.snapshots import latest_snapshot  # noqa: E402
from dmp.membership.runs import latest_run  # noqa: E402
from dmp.synth import example_segments  # noqa: E402

FRESH = {
    "id": "fresh",
    "name": "Qualified just now",
    "where": {"did": {"event": "page", "url_contains": "/qualify"}},
}
CONSENT = {"consent": {"categoryPreferences": {"analytics": True, "advertising": True}}}


def dmp(data_dir: Path, *args: str, stdin: str | None = None) -> str:
    """Run a dmp command on the data dir; return its output."""
    run = subprocess.run(
        [sys.executable, "-m", "dmp", "--data-dir", str(data_dir), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if run.returncode:
        raise SystemExit(f"dmp {' '.join(args)} failed: {run.stderr}")
    return run.stdout


def prepare(data_dir: Path, args: argparse.Namespace) -> tuple[str, str]:
    """Fill the data dir (unless it has data); return (write key, partner key)."""
    if not (data_dir / "events").exists():
        dmp(data_dir, "synth", "--persons", str(args.persons), "--days", "30")
    segments = [*example_segments(args.segments), FRESH]
    (data_dir / "segments.json").write_text(json.dumps(segments))
    dmp(data_dir, "segments", "apply", str(data_dir / "segments.json"))
    dmp(data_dir, "segments", "run")
    site = f"bench-{uuid.uuid4().hex[:8]}"  # a data dir may be reused
    write_key = dmp(data_dir, "sites", "add", site, "--domain", "bench.test").split()[-1]
    partner = dmp(data_dir, "keys", "create", "--scope", "partner", "--audiences", "fresh")
    return write_key, partner.split()[-1]


class Load(threading.Thread):
    """Send ``rate`` events/s through POST /v1/batch until stopped."""

    def __init__(self, port: int, write_key: str, rate: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.rate, self.stop = port, rate, stop
        auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
        self.headers = {"Authorization": auth, "Content-Type": "application/json"}
        self.sent = self.failed = 0
        # Visitors of this run's own: on a data dir reused, earlier runs' visitors (with
        # a hundred visits each by then) are not what this run's load is made of.
        self.prefix = f"load-{uuid.uuid4().hex[:6]}"

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        batch, started = 50, time.monotonic()
        while not self.stop.is_set():
            events = [
                {
                    "type": "page",
                    "anonymousId": f"{self.prefix}-{(self.sent + i) % 5000}",
                    "name": "page",
                    "properties": {"url": f"https://bench.test/blog/{i % 30}"},
                    "context": CONSENT,
                    "messageId": uuid.uuid4().hex,
                }
                for i in range(batch)
            ]
            try:
                conn.request("POST", "/v1/batch", json.dumps({"batch": events}), self.headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self.sent += batch if ok else 0
            self.failed += 0 if ok else batch
            ahead = self.sent / self.rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)


def probe(port: int, write_key: str, partner: str, n: int) -> float:
    """One qualifying visit; return seconds until the lookup names ``fresh``."""
    uid = f"probe{n:04d}{uuid.uuid4().hex[:13]}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    path = f"/p.gif?k={write_key}&url=https%3A%2F%2Fbench.test%2Fqualify&consent=analytics,ads"
    conn.request("GET", path, headers={"Cookie": f"dmp_uid={uid}", "Host": "bench.test"})
    conn.getresponse().read()
    hit = time.monotonic()
    while time.monotonic() - hit < 60:
        conn.request(
            "GET", f"/api/v1/lookup?uid={uid}", headers={"Authorization": f"Bearer {partner}"}
        )
        answer = json.loads(conn.getresponse().read())
        if any(s["id"] == "fresh" for d in answer["data"] for s in d["segment"]):
            return time.monotonic() - hit
        time.sleep(0.05)
    return float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--persons", type=int, default=2000)
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=40)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--data-dir", type=Path, help="a data dir filled before (kept)")
    parser.add_argument(
        "--flush-seconds", type=float, help="DMP_FLUSH_SECONDS for the server (default: dmp's)"
    )
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="dmp-fresh-"))
    write_key, partner = prepare(data_dir, args)
    target = Target("dmp", [sys.executable, "-m", "dmp", "serve", "--workers", "2"], data_dir)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    if args.flush_seconds is not None:
        env["DMP_FLUSH_SECONDS"] = str(args.flush_seconds)
    start(target, env)
    server_log = data_dir / "server.log"
    stopping = threading.Event()
    try:
        wait_up(target, "/healthz", 900)  # a million persons' Redis loads for minutes
        load = Load(target.port, write_key, args.rate, stopping)
        load.start()
        time.sleep(args.warmup)
        sent0, t0 = load.sent, time.monotonic()
        logged = server_log.stat().st_size  # the log from here on: the probes' time
        seconds = []
        for n in range(args.probes):
            seconds.append(probe(target.port, write_key, partner, n))
            print(f"probe {n + 1:>3}: {seconds[-1]:.2f} s", flush=True)
            time.sleep(random.uniform(0.2, 3.0))  # not in step with the worker's flushes
        rate = (load.sent - sent0) / (time.monotonic() - t0)
        config = load_config({"data_dir": data_dir})
        persons = pl.scan_parquet(latest_snapshot(config)).select(pl.len()).collect().item()
        segments = len((latest_run(config) or {}).get("members", {}))
    finally:
        stopping.set()
        stop(target)
        stop_redis(target)
    seconds.sort()
    with server_log.open(errors="replace") as f:
        f.seek(logged)
        lane = where_it_went(f.read())
    p50 = statistics.median(seconds)
    p95 = seconds[min(len(seconds) - 1, round(0.95 * len(seconds)) - 1)]
    print(
        f"\n{args.probes} probes at {rate:,.0f} events/s ({load.failed} failed), "
        f"{persons:,} persons in the last run, {segments} segments: "
        f"freshness p50 {p50:.2f} s, p95 {p95:.2f} s, max {seconds[-1]:.2f} s "
        f"(target p95 ≤ 2 s)"
    )
    for name, values in lane.items():
        print(
            f"  {name}: {len(values)}, "
            + ", ".join(f"{k} {v:,.3g}" for k, v in spread(values).items())
        )
    append(
        "freshness",
        {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": commit(),
            "host": platform.node(),
            "persons": persons,
            "segments": segments,
            "rate": rate,
            "failed": load.failed,
            "seconds": seconds,
            "p50": p50,
            "p95": p95,
            "flush_every": args.flush_seconds,  # None: dmp's default
            **{name: spread(values) | {"n": len(values)} for name, values in lane.items()},
        },
    )


TICK = re.compile(r"segments live: (\d+) persons, \d+ memberships moved in ([\d.]+) s")
FLUSH = re.compile(r"stored (\d+) events in \d+ files, acked \d+ entries \((\d+) ms\)")


def where_it_went(log: str) -> dict[str, list[float]]:
    """Return the live ticks' seconds and persons, and the flushes' events and seconds."""
    ticks = [(int(n), float(s)) for n, s in TICK.findall(log)]
    flushes = [(int(n), int(ms) / 1000) for n, ms in FLUSH.findall(log)]
    return {
        "tick_seconds": [s for _, s in ticks],
        "tick_persons": [float(n) for n, _ in ticks],
        "flush_write_seconds": [s for _, s in flushes],
        "flush_events": [float(n) for n, _ in flushes],
    }


def spread(values: list[float]) -> dict[str, float]:
    """Return the median, p95 and max of ``values`` (empty: nothing)."""
    if not values:
        return {}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * len(ordered)) - 1)]
    return {"p50": statistics.median(ordered), "p95": p95, "max": ordered[-1]}


if __name__ == "__main__":
    main()
