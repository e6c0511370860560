"""Pixel throughput and p99 latency: dmp against a bare Flask app, same gunicorn settings.

    python bench/pixel.py [--workers 2] [--threads 4] [--connections 32] [--seconds 10]
                          [--rounds 3] [--ingest]

Both servers run gunicorn with the same worker class, processes and threads; wrk hits a
consented pixel hit with its cookie on loopback. Rounds alternate between the two and the
medians are compared. Without --ingest dmp runs with `--no-ingest`, so that the ingest
worker does not take CPU from the web processes on a small box (it is measured apart by
bench/ingest.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
COOKIE = "dmp_uid=bench0123456789abcdefg"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early: {proc.args}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise SystemExit(f"server did not come up: {url}")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def wrk(url: str, args: argparse.Namespace) -> tuple[float, float]:
    """Return (requests/s, p99 ms) of one wrk run."""
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{args.connections}",
            f"-d{args.seconds}s",
            "--latency",
            "-H",
            f"Cookie: {COOKIE}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    if "Non-2xx" in out or "Socket errors" in out:
        print(out, file=sys.stderr)
    return rps, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ingest", action="store_true", help="run dmp's ingest worker too")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install -y wrk")

    data_dir = Path(tempfile.mkdtemp(prefix="dmp-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMP_")}
    env["DMP_DATA_DIR"] = str(data_dir)
    dmp = [sys.executable, "-m", "dmp"]
    key = (
        subprocess.run(
            [*dmp, "sites", "add", "Bench", "--domain", "bench.test"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    query = (
        f"/p.gif?k={key}&url=https%3A%2F%2Fbench.test%2Fpage&topics=crm,erp&consent=analytics,ads"
    )

    dmp_port, bare_port = free_port(), free_port()
    serve = [
        *dmp,
        "serve",
        "--port",
        str(dmp_port),
        "--workers",
        str(args.workers),
        "--threads",
        str(args.threads),
    ] + ([] if args.ingest else ["--no-ingest"])
    worker_class = "gthread" if args.threads > 1 else "sync"
    bare = [
        sys.executable,
        "-m",
        "gunicorn",
        "-b",
        f"127.0.0.1:{bare_port}",
        "-w",
        str(args.workers),
        "-k",
        worker_class,
        "--threads",
        str(args.threads),
        "--log-level",
        "warning",
        "bench.bare_app:app",
    ]
    procs = {
        "dmp": subprocess.Popen(serve, env=env, cwd=ROOT, stderr=subprocess.DEVNULL),
        "bare": subprocess.Popen(bare, env=env, cwd=ROOT, stderr=subprocess.DEVNULL),
    }
    urls = {
        "dmp": f"http://127.0.0.1:{dmp_port}{query}",
        "bare": f"http://127.0.0.1:{bare_port}{query}",
    }
    results: dict[str, list[tuple[float, float]]] = {"dmp": [], "bare": []}
    try:
        for name, proc in procs.items():
            wait_up(urls[name], proc)
            wrk(urls[name], argparse.Namespace(**{**vars(args), "seconds": 2}))  # warm up
        for round_no in range(args.rounds):
            for name in ("bare", "dmp") if round_no % 2 == 0 else ("dmp", "bare"):
                rps, p99 = wrk(urls[name], args)
                results[name].append((rps, p99))
                print(f"round {round_no + 1} {name:4}  {rps:10.0f} req/s  p99 {p99:7.2f} ms")
        from dmp.redisserver import connect, locate_server

        enqueued = connect(locate_server(data_dir).url).xlen("dmp:stream:ingest")
    finally:
        for proc in procs.values():
            stop(proc)

    med = {
        n: (statistics.median(r for r, _ in v), statistics.median(p for _, p in v))
        for n, v in results.items()
    }
    ratio_rps = med["dmp"][0] / med["bare"][0]
    ratio_p99 = med["dmp"][1] / med["bare"][1]
    summary = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "workers": args.workers,
        "threads": args.threads,
        "connections": args.connections,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "ingest": args.ingest,
        "bare_rps": round(med["bare"][0]),
        "dmp_rps": round(med["dmp"][0]),
        "bare_p99_ms": med["bare"][1],
        "dmp_p99_ms": med["dmp"][1],
        "rps_ratio": round(ratio_rps, 2),
        "p99_ratio": round(ratio_p99, 2),
        "hits_enqueued": enqueued,
    }
    print(json.dumps(summary, indent=2))
    verdict = "met" if ratio_rps >= 0.6 and ratio_p99 <= 2.0 else "MISSED"
    print(f"target (≥0.6× req/s, ≤2× p99): {verdict}")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    with open(out / "pixel.jsonl", "a") as fh:
        fh.write(json.dumps(summary) + "\n")
    shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
