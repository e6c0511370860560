"""Lookup latency: ``GET /api/v1/lookup`` at a fixed request rate on loopback.

    python bench/lookup.py [--persons 5000] [--rate 2000] [--seconds 20] [--rounds 3]

``dmp serve --no-ingest`` with its defaults on a fresh data dir filled by ``dmp synth``,
with 50 mixed segments run and a partner key sharing all of them. wrk (Lua script:
every connection waits between requests so that all together send ``--rate``
requests/s) asks for the synth visitors' cookies in turn, a tenth of them unknown ones:

- **lookup**: on the lookup port (``dmp.serve.lookups``' processes, what ad tools use);
- **lookup-web**: the same on the web port (gunicorn's workers, ``LookupApp``);
- **healthz-web**: ``GET /healthz`` of the web port: the floor of dmp's web stack;
- **healthz**: ``GET /healthz`` of the lookup port: the floor of the lookup processes.

Target (issue 18): lookup p99 ≤ 5 ms at 2,000 req/s and ≤ 1.1× the web stack's
``/healthz`` p99. ``--workers``/``--threads`` set the web processes (default: serve's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from freshness import dmp  # noqa: E402  (bench/ is the script's folder)
from pixel import Target, _ms, free_port, start, stop, stop_redis, wait_up  # noqa: E402
from runlog import append, commit  # noqa: E402

from dmp.storage import redisserver  # noqa: E402
from dmp.synth import example_segments  # noqa: E402

CONNECTIONS = 32

SCRIPT = """
local uids = {%(uids)s}
local n = 0
local key = "%(key)s"
function delay() return %(delay)d end
function request()
  n = n + 1
  return wrk.format("GET", "%(path)s" .. uids[(n %% #uids) + 1],
                    {["Authorization"] = "Bearer " .. key})
end
"""


def prepare(data_dir: Path, persons: int) -> str:
    """Fill the data dir; return the partner key."""
    dmp(data_dir, "synth", "--persons", str(persons), "--days", "30")
    segments = example_segments(50)
    (data_dir / "segments.json").write_text(json.dumps(segments))
    dmp(data_dir, "segments", "apply", str(data_dir / "segments.json"))
    dmp(data_dir, "segments", "run")
    shared = ",".join(s["id"] for s in segments)
    return dmp(data_dir, "keys", "create", "--scope", "partner", "--audiences", shared).split()[-1]


def cookies(data_dir: Path) -> list[str]:
    """Return the synth visitors' cookie ids (the server running) and a tenth unknown."""
    r = redisserver.connect(redisserver.locate_server(data_dir).url)
    uids = [k.split(":", 3)[3] for k in r.scan_iter(match="dmp:id:uid:*", count=1000)]
    r.close()
    unknown = [f"unknown{i:017d}" for i in range(len(uids) // 10)]
    return sorted(uids) + unknown


def wrk(url: str, script: Path, seconds: float) -> dict:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{CONNECTIONS}",
            f"-d{seconds:g}s",
            "--timeout",
            "5s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": _ms(out, "50%"),
        "p99_ms": _ms(out, "99%"),
        "errors": int(errors.group(1)) if errors else 0,
    }


def write_script(folder: Path, name: str, path: str, uids: list[str], key: str, delay: int):
    script = folder / f"{name}.lua"
    listed = ",".join(f'"{u}"' for u in uids)
    script.write_text(SCRIPT % {"uids": listed, "key": key, "delay": delay, "path": path})
    return script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--persons", type=int, default=5000)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, help="web processes (default: serve's)")
    parser.add_argument("--threads", type=int, help="threads per web process")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="dmp-lookup-"))
    key = prepare(data_dir, args.persons)
    lookup_port = free_port()
    cmd = [sys.executable, "-m", "dmp", "serve", "--no-ingest", "--lookup-port", str(lookup_port)]
    cmd += ["--workers", str(args.workers)] if args.workers else []
    cmd += ["--threads", str(args.threads)] if args.threads else []
    target = Target("dmp", cmd, data_dir)
    env = {k: v for k, v in os.environ.items() if k.startswith("DMP_") and k != "DMP_DATA_DIR"}
    start(target, {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env})
    names = ("lookup", "lookup-web", "healthz-web", "healthz")
    runs: dict[str, list[dict]] = {name: [] for name in names}
    try:
        wait_up(target, "/healthz")
        wait_up(Target("lookups", [], data_dir, port=lookup_port, proc=target.proc), "/healthz")
        lookups = f"http://127.0.0.1:{lookup_port}"
        urls = {"lookup": lookups, "lookup-web": target.url}
        urls |= {"healthz-web": target.url, "healthz": lookups}
        uids = cookies(data_dir)
        paths = {"lookup": "/api/v1/lookup?uid=", "lookup-web": "/api/v1/lookup?uid="}
        paths |= {"healthz-web": "/healthz?", "healthz": "/healthz?"}
        # Each connection waits ``delay`` ms after an answer (about 2 ms: the answer's own
        # time) so that together they send about the rate asked for; wrk says what it was.
        delay = max(1, round(CONNECTIONS * 1000 / args.rate) - 2)
        scripts = {n: write_script(data_dir, n, p, uids, key, delay) for n, p in paths.items()}
        wrk(lookups, scripts["lookup"], 3)  # warm-up
        wrk(target.url, scripts["lookup-web"], 3)
        print(f"{CONNECTIONS} connections, each waiting {delay} ms between requests")
        for rnd in range(args.rounds):
            for name in names[rnd % 4 :] + names[: rnd % 4]:
                result = wrk(urls[name], scripts[name], args.seconds)
                runs[name].append(result)
                print(
                    f"round {rnd + 1} {name:<12} {result['rps']:7,.0f} req/s  "
                    f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  "
                    f"errors {result['errors']}",
                    flush=True,
                )
    finally:
        stop(target)
        stop_redis(target)
    print(f"\n{len(uids):,} cookies asked for ({len(uids) // 11:,} unknown), 50 segments shared")
    for name, found in runs.items():
        rps = statistics.median(r["rps"] for r in found)
        p50 = statistics.median(r["p50_ms"] for r in found)
        p99 = statistics.median(r["p99_ms"] for r in found)
        print(f"{name:<12} median {rps:7,.0f} req/s  p50 {p50:.2f} ms  p99 {p99:.2f} ms")
    append(
        "lookup",
        {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": commit(),
            "host": platform.node(),
            "persons": args.persons,
            "rate": args.rate,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
