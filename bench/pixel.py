"""Pixel throughput and p99 latency: dmp against a bare Flask app, same gunicorn settings.

    python bench/pixel.py [--workers 2] [--threads 4] [--connections 32] [--wrk-threads 2]
                          [--seconds 10] [--rounds 3] [--warmup 2]
                          [--ingest off|on|both] [--visitors N] [--worker-nice N]
                          [--server-env NAME=VALUE]
                          [--floor] [--tcf]
                          [--no-save]

Targets, each a server of its own, started once and hit in turn by wrk on loopback:

- ``bare``: a bare Flask app answering the same 43-byte GIF with the same headers
  (bench/bare_app.py), served by dmp's own gunicorn set-up (same worker class, processes,
  threads);
- ``dmp``: ``dmp serve --no-ingest`` on a fresh data dir (its own embedded Redis): the
  ingest worker does not take CPU from the web processes; hits pile up in the stream;
- ``dmp+ingest`` (``--ingest on|both``): ``dmp serve`` with its ingest worker draining the
  stream while wrk runs. After each of its rounds the benchmark waits until the worker has
  stored the backlog, so that it does not eat into the next target's round
  (``--worker-nice N`` renices that worker from outside, an experiment);
- ``dmp-tcf`` (``--tcf``): ``dmp serve --no-ingest`` again, its hits carrying their consent
  as an IAB TCF v2.2 TC string (``gdpr=1&gdpr_consent=…``, 305 characters) instead of
  ``consent=``: what decoding the CMP's string costs the pixel;
- ``wsgi`` (``--floor``): the GIF as a plain WSGI callable under the same gunicorn, the
  server's own ceiling, for context.

Beside each target's rate, its CPU per request by role, read from ``/proc`` around each
round: ``web`` (the server's processes), ``worker`` (dmp's ingest worker, until it has
stored the round's hits), ``redis`` (the embedded Redis) and ``wrk`` (the load generator
on the same cores): where a hit's cost goes, measured rather than inferred. And the
busiest web process's share of the web processes' CPU (``busiest``, the most of any round;
50 % is even for two): wrk keeps its connections open, and a round whose connections all
went to one process is served on one core.

Every request is a consented hit with its cookie:
``/p.gif?k=<write key>&url=https://bench.test/page&topics=crm,erp&consent=analytics,ads``
with ``Cookie: dmp_uid=<22 chars>``: one visitor's, or with ``--visitors N`` each next
request the next of N visitors' (a wrk script), as a site's hits spread over its visitors.
Rounds rotate the order of the targets; medians of the rounds are compared with the bare
app's. Target (issue 18): dmp with its ingest worker ≥ 0.8× its requests/s and p99 ≤ 1.5×
its p99. Afterwards the benchmark checks that every
request dmp answered is a hit on its stream (or, with the worker on, an event stored in
Parquet).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from runlog import append, commit  # noqa: E402  (bench/ is the script's folder)

from dmp.ingest import stream  # noqa: E402
from dmp.storage import redisserver  # noqa: E402

UID = "bench0123456789abcdefg"  # a well-formed dmp_uid of 22 characters
PATH = "/p.gif?k={key}&url=https%3A%2F%2Fbench.test%2Fpage&topics=crm,erp&consent=analytics,ads"
# The same hit with its consent as a CMP's IAB TCF v2.2 TC string (--tcf): @iabtcf/core's
# "accept all" (11 purposes, 344 vendors, 305 characters) of the decoder's test vectors.
VECTORS = ROOT / "tests" / "collectors" / "tcf" / "vectors.json"
TCF_PATH = "/p.gif?k={key}&url=https%3A%2F%2Fbench.test%2Fpage&topics=crm,erp&gdpr=1&gdpr_consent="


def tcf_path() -> str:
    """Return the pixel path whose consent is the "accept all" TC string."""
    vectors = json.loads(VECTORS.read_text())["vectors"]
    return TCF_PATH + next(v["string"] for v in vectors if v["name"] == "accept all")


RPS_TARGET, P99_TARGET = 0.8, 1.5


@dataclass
class Target:
    """One server under test and what wrk measured on it."""

    name: str
    cmd: list[str]
    data_dir: Path
    dmp: bool = False  # a dmp server: its stream is checked afterwards
    path: str = PATH  # what wrk asks for, {key} filled in
    ingest: bool = False
    port: int = 0
    proc: subprocess.Popen | None = None
    runs: list[dict] = field(default_factory=list)
    requests: int = 0  # answered, over warm-up and rounds
    drains: list[float] = field(default_factory=list)  # s until the worker caught up
    backlogs: list[int] = field(default_factory=list)  # stream length as wrk stopped
    cpu: list[dict] = field(default_factory=list)  # per round: CPU µs per request by role

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def redis_url(self) -> str:
        return redisserver.locate_server(self.data_dir).url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(target: Target, env: dict[str, str]) -> None:
    target.port = free_port()
    log = open(target.data_dir / "server.log", "w")  # noqa: SIM115 - closed with the process
    target.proc = subprocess.Popen(
        [*target.cmd, "--port", str(target.port)],
        env={**env, "DMP_DATA_DIR": str(target.data_dir)},
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C on the benchmark reaches us, not the servers
    )


def wait_up(target: Target, path: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if target.proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", target.port), timeout=1) as conn:
                conn.sendall(f"GET {path} HTTP/1.0\r\nHost: bench.test\r\n\r\n".encode())
                if re.match(rb"HTTP/1\.[01] 200 ", conn.recv(64)):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    log = (target.data_dir / "server.log").read_text()[-3000:]
    raise SystemExit(f"{target.name} did not come up on port {target.port}:\n{log}")


def renice_worker(target: Target, niceness: int) -> int:
    """Lower the priority of dmp's ingest worker (a child of the serve process); return its pid."""
    children = Path(f"/proc/{target.proc.pid}/task/{target.proc.pid}/children")
    for pid in map(int, children.read_text().split()):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"worker" in cmdline:
            os.setpriority(os.PRIO_PROCESS, pid, niceness)
            return pid
    raise SystemExit(f"{target.name}: no ingest worker process found to renice")


def stop(target: Target) -> None:
    proc = target.proc
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_redis(target: Target) -> None:
    """Stop a target's embedded Redis should its server have left it running."""
    server = redisserver.locate_server(target.data_dir)
    if server.socket.exists():
        redisserver.stop_if_last(server)


TICK = os.sysconf("SC_CLK_TCK")
ROLES = ("web", "worker", "redis", "wrk")  # where a target's CPU goes, per request


def _tree(pid: int) -> list[int]:
    """Return a process and all its descendants (from /proc's children lists)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass  # a thread or process that has just ended
    return found


def _cpu_s(pid: int) -> float:
    """Return a live process's user + system CPU seconds so far (0 once it has ended)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def _redis_pid(target: Target) -> int | None:
    """Return the pid of a target's embedded Redis (None before it wrote its pid file)."""
    pidfile = redisserver.locate_server(target.data_dir).directory / "redis.pid"
    return int(pidfile.read_text()) if pidfile.exists() else None


def cpu_by_role(target: Target) -> dict[str, float]:
    """Return the CPU seconds a target's processes have used so far, by role: ``web``
    (the server's processes: gunicorn's master and workers, dmp's lookup processes),
    ``worker`` (dmp's ingest worker) and ``redis`` (its embedded Redis: ``dmp serve``
    starts it as a child, so it is taken out of the server's tree, not counted twice).
    Processes that ended are not counted; none ends during a run."""
    used = dict.fromkeys(ROLES, 0.0)
    redis_pid = _redis_pid(target)
    tree = _tree(target.proc.pid)
    for pid in tree:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        role = "redis" if pid == redis_pid else "worker" if b"worker" in argv else "web"
        used[role] += _cpu_s(pid)
    if redis_pid is not None and redis_pid not in tree:
        used["redis"] = _cpu_s(redis_pid)  # a daemon of its own
    return used


def web_process_cpu(target: Target) -> dict[int, float]:
    """Return the CPU seconds so far of each of a target's gunicorn worker processes (the
    server's children that are neither its Redis, its ingest worker nor a lookup process)."""
    redis_pid = _redis_pid(target)
    used = {}
    for task in Path(f"/proc/{target.proc.pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for pid in children:
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if pid != redis_pid and not {b"worker", b"lookups"} & set(argv):
                used[pid] = _cpu_s(pid)
    return used


def busiest_share(before: dict[int, float], after: dict[int, float]) -> float:
    """Return the busiest web process's share of the web processes' CPU between two readings
    (1 / processes when even; 1.0 when one process served everything; NaN without CPU).
    A process started between the readings counts all its CPU."""
    used = [after[pid] - before.get(pid, 0.0) for pid in after]
    return max(used) / sum(used) if sum(used) > 0 else float("nan")


def children_cpu_s() -> float:
    """Return the CPU seconds of this process's waited-for children (wrk's runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str, label: str) -> float:
    value, unit = re.search(label + r"\s+([\d.]+)(us|ms|s)\b", text).groups()
    return float(value) * _UNITS[unit]


# wrk's script for --visitors N: each request carries the next of N cookies in turn
# ("bench" and 17 digits, 22 characters like UID), so that hits spread over N visitors
# (their persons, timelines and identities) as a site's do. Each wrk thread starts at a
# visitor of its own (wrk's threads are Lua states of their own, with the same seed).
VISITORS_LUA = """
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
function init(args)
  n = tonumber(os.getenv("DMP_BENCH_VISITORS"))
  i = (id * 7919) % n
end
function request()
  i = (i + 1) % n
  return wrk.format(nil, nil, {["Cookie"] = string.format("dmp_uid=bench%017d", i)})
end
"""


def wrk(url: str, args: argparse.Namespace, seconds: float) -> dict:
    """Run wrk once; return requests/s, p50/p99 ms, requests answered and errors."""
    if args.visitors > 1:
        cookie = ["-s", str(args.visitors_script)]
    else:
        cookie = ["-H", f"Cookie: dmp_uid={UID}"]
    out = subprocess.run(
        [
            "wrk",
            f"-t{args.wrk_threads}",
            f"-c{args.connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "5s",
            "--latency",
            *cookie,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "DMP_BENCH_VISITORS": str(args.visitors)},
    ).stdout
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    if errors:
        print(out, file=sys.stderr)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": _ms(out, "50%"),
        "p99_ms": _ms(out, "99%"),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "errors": errors,
    }


def _on_streams(r) -> int:
    """Return the hits on dmp's ingest streams (every partition's), not yet stored."""
    return sum(int(r.xlen(keys.stream)) for keys in stream.used_partitions(r))


def wait_drained(target: Target, since: float) -> None:
    """Wait until dmp's worker has stored everything on its streams; note how long it took."""
    r = redisserver.connect(target.redis_url())
    try:
        target.backlogs.append(_on_streams(r))
        deadline = time.monotonic() + 600
        while _on_streams(r) and time.monotonic() < deadline:
            time.sleep(0.1)
        target.drains.append(time.monotonic() - since)
    finally:
        r.close()


def check_hits(target: Target) -> dict:
    """Return what reached dmp's stream (or event log) against the requests it answered."""
    from dmp.ingest.worker import status

    r = redisserver.connect(target.redis_url())
    try:
        last, stable_since = -1, time.monotonic()
        while time.monotonic() - stable_since < 3.0:  # the worker flushes every 2 s
            state = status(r)
            now = state["pending"] + state["events_stored"]
            if now != last:
                last, stable_since = now, time.monotonic()
            time.sleep(0.2)
        hits = {
            "requests_answered": target.requests,
            "stream_xlen": state["pending"],
            "events_stored": state["events_stored"],
        }
    finally:
        r.close()
    if target.ingest:
        import polars as pl

        from dmp.ingest.eventlog import scan_events

        events = target.data_dir / "events"
        hits["parquet_rows"] = scan_events(events).select(pl.len()).collect().item()
    hits["hits"] = hits["stream_xlen"] + hits["events_stored"]
    # wrk counts answered requests only: up to one in-flight request per connection and
    # run may have reached dmp without being counted.
    hits["unanswered_allowance"] = hits["hits"] - hits["requests_answered"]
    return hits


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(targets: list[Target]) -> str:
    bare = next(t for t in targets if t.name == "bare")
    b_rps = median([r["rps"] for r in bare.runs])
    b_p99 = median([r["p99_ms"] for r in bare.runs])
    width = max(len(" / ".join(f"{r['rps']:.0f}" for r in t.runs)) for t in targets) + 3
    lines = [
        f"{'target':<12}{'req/s':>10}{'× bare':>8}{'p50 ms':>9}{'p99 ms':>9}{'× bare':>8}"
        f"{'busiest':>9}   {'rounds req/s':<{width}}verdict",
    ]
    cpu_lines = [
        "CPU µs per request (medians of the rounds; the worker's until it stored them):",
        f"{'target':<12}" + "".join(f"{r:>9}" for r in ROLES) + f"{'total':>9}",
    ]
    for t in targets:
        rps, p99 = median([r["rps"] for r in t.runs]), median([r["p99_ms"] for r in t.runs])
        p50 = median([r["p50_ms"] for r in t.runs])
        verdict = ""
        if t.dmp:
            ok = rps / b_rps >= RPS_TARGET and p99 / b_p99 <= P99_TARGET
            verdict = "met" if ok else "MISSED"
        rounds = " / ".join(f"{r['rps']:.0f}" for r in t.runs)
        shares = [r["busiest_web_share"] for r in t.runs if not math.isnan(r["busiest_web_share"])]
        busiest = max(shares, default=float("nan"))  # one web process's most in a round
        lines.append(
            f"{t.name:<12}{rps:>10,.0f}{rps / b_rps:>8.2f}{p50:>9.2f}{p99:>9.2f}"
            f"{p99 / b_p99:>8.2f}{busiest:>9.0%}   {rounds:<{width}}{verdict}"
        )
        cpu = {r: median([c[r] for c in t.cpu]) for r in ROLES}
        cpu_lines.append(
            f"{t.name:<12}"
            + "".join(f"{cpu[r]:>9.0f}" for r in ROLES)
            + f"{median([sum(c.values()) for c in t.cpu]):>9.0f}"
        )
    return "\n".join(lines + [""] + cpu_lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="gunicorn web processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per web process")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10, help="per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=2, help="s of wrk per target first")
    parser.add_argument(
        "--ingest",
        choices=("off", "on", "both"),
        default="off",
        help="dmp without its ingest worker (off), with it (on), or both side by side",
    )
    parser.add_argument(
        "--worker-nice",
        type=int,
        default=0,
        metavar="N",
        help="run dmp's ingest worker at niceness N (an experiment; dmp does not do it itself)",
    )
    parser.add_argument(
        "--visitors",
        type=int,
        default=1,
        metavar="N",
        help="spread the hits over N cookies in turn (default 1: every hit the same visitor's)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for dmp's servers, e.g. DMP_FLUSH_SECONDS=0.5 (an experiment; repeatable)",
    )
    parser.add_argument("--floor", action="store_true", help="add a plain WSGI GIF target")
    parser.add_argument(
        "--tcf",
        action="store_true",
        help="add dmp-tcf: dmp (no ingest) whose hits carry a TC string instead of consent=",
    )
    parser.add_argument("--no-save", action="store_true", help="do not append to bench/results")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install -y wrk")

    if any("=" not in item or not item.startswith("DMP_") for item in args.server_env):
        raise SystemExit("--server-env takes NAME=VALUE with a DMP_ setting's name")
    settings = dict(item.split("=", 1) for item in args.server_env)
    if {"DMP_DATA_DIR", "DMP_REDIS_URL", "DMP_STREAM_PARTITIONS"} & set(settings):
        raise SystemExit("--server-env: the benchmark sets up the data folder and Redis itself")
    tmp = Path(tempfile.mkdtemp(prefix="dmp-pixel-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DMP_")}
    args.visitors_script = tmp / "visitors.lua"
    args.visitors_script.write_text(VISITORS_LUA)
    py = sys.executable
    shape = ["--workers", str(args.workers), "--threads", str(args.threads)]
    targets = [Target("bare", [py, "bench/bare_app.py", *shape], tmp / "bare")]
    if args.ingest in ("off", "both"):
        cmd = [py, "-m", "dmp", "serve", *shape, "--no-ingest"]
        targets.append(Target("dmp", cmd, tmp / "dmp", dmp=True))
    if args.ingest in ("on", "both"):
        cmd = [py, "-m", "dmp", "serve", *shape]
        targets.append(Target("dmp+ingest", cmd, tmp / "dmp-ingest", dmp=True, ingest=True))
    if args.tcf:
        cmd = [py, "-m", "dmp", "serve", *shape, "--no-ingest"]
        targets.append(Target("dmp-tcf", cmd, tmp / "dmp-tcf", dmp=True, path=tcf_path()))
    if args.floor:
        targets.append(Target("wsgi", [*targets[0].cmd, "--wsgi"], tmp / "wsgi"))

    keys = {}
    for t in targets:
        t.data_dir.mkdir(parents=True)
        if t.dmp:
            added = subprocess.run(
                [py, "-m", "dmp", "sites", "add", "Bench", "--domain", "bench.test"],
                env={**env, "DMP_DATA_DIR": str(t.data_dir)},
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            keys[t.name] = added.stdout.strip().splitlines()[-1]
    key = next(iter(keys.values()), "bench")
    checks: dict[str, dict] = {}
    try:
        for t in targets:
            start(t, {**env, **settings} if t.dmp else env)
        for t in targets:
            path = t.path.format(key=keys.get(t.name, key))
            wait_up(t, path)
            if t.ingest and args.worker_nice:
                renice_worker(t, args.worker_nice)
            warm = wrk(t.url + path, args, args.warmup)
            t.requests += warm["requests"] + 1  # and wait_up's request
            if t.ingest:
                wait_drained(t, time.monotonic())
        for round_no in range(args.rounds):
            shift = round_no % len(targets)
            for t in targets[shift:] + targets[:shift]:
                before, wrk_before = cpu_by_role(t), children_cpu_s()
                web_before = web_process_cpu(t)
                run = wrk(t.url + t.path.format(key=keys.get(t.name, key)), args, args.seconds)
                wrk_cpu = children_cpu_s() - wrk_before
                run["busiest_web_share"] = round(busiest_share(web_before, web_process_cpu(t)), 3)
                t.runs.append(run)
                t.requests += run["requests"]
                line = (
                    f"round {round_no + 1}  {t.name:<11}{run['rps']:>9.0f} req/s"
                    f"  p50 {run['p50_ms']:6.2f} ms  p99 {run['p99_ms']:6.2f} ms"
                    f"  busiest web process {run['busiest_web_share']:.0%}"
                )
                if t.ingest:
                    wait_drained(t, time.monotonic())
                    line += f"  backlog {t.backlogs[-1]:,} drained in {t.drains[-1]:.1f} s"
                # The worker's CPU counts until it has stored the round's hits (the drain).
                after = cpu_by_role(t) | {"wrk": before["wrk"] + wrk_cpu}
                t.cpu.append({r: (after[r] - before[r]) / run["requests"] * 1e6 for r in ROLES})
                print(line, flush=True)
        for t in targets:
            if t.dmp:
                checks[t.name] = check_hits(t)
    finally:
        for t in targets:
            stop(t)
        for t in targets:
            stop_redis(t)
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print(
        f"gunicorn gthread, {args.workers} processes × {args.threads} threads; wrk "
        f"-t{args.wrk_threads} -c{args.connections} -d{args.seconds:g}s; "
        + (f"ingest worker at nice {args.worker_nice}; " if args.worker_nice else "")
        + (f"{args.visitors:,} visitors in turn; " if args.visitors > 1 else "one visitor; ")
        + "".join(f"{name}={value}; " for name, value in settings.items())
        + f"medians of {args.rounds} rounds"
    )
    print(table(targets))
    for name, c in checks.items():
        print(
            f"{name}: {c['requests_answered']:,} requests answered, {c['hits']:,} hits reached "
            f"Redis (stream {c['stream_xlen']:,}, stored {c['events_stored']:,}"
            + (f", Parquet rows {c['parquet_rows']:,}" if "parquet_rows" in c else "")
            + f"), difference {c['unanswered_allowance']:+,}"
        )
    errors = sum(r["errors"] for t in targets for r in t.runs)
    if errors:
        print(f"wrk saw {errors} socket errors or non-2xx answers (see stderr)")

    bare = targets[0]
    summary = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "workers": args.workers,
        "threads": args.threads,
        "connections": args.connections,
        "wrk_threads": args.wrk_threads,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "worker_nice": args.worker_nice,
        "visitors": args.visitors,
        "server_env": settings,
        "targets": {
            t.name: {
                "rps": round(median([r["rps"] for r in t.runs])),
                "p50_ms": median([r["p50_ms"] for r in t.runs]),
                "p99_ms": median([r["p99_ms"] for r in t.runs]),
                "rps_ratio": round(
                    median([r["rps"] for r in t.runs]) / median([r["rps"] for r in bare.runs]), 3
                ),
                "p99_ratio": round(
                    median([r["p99_ms"] for r in t.runs])
                    / median([r["p99_ms"] for r in bare.runs]),
                    3,
                ),
                "runs": t.runs,
                "cpu_us_per_request": t.cpu,
                **({"backlogs": t.backlogs, "drain_s": t.drains} if t.ingest else {}),
                **({"hits": checks[t.name]} if t.name in checks else {}),
            }
            for t in targets
        },
    }
    if not args.no_save:
        append("pixel", summary)


if __name__ == "__main__":
    main()
