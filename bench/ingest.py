"""Worker ingest: stream → dedup → identity → profile → Parquet, on one core.

    python bench/ingest.py [--events 1000000] [--browsers 50000] [--users 20000] [--runs 1]
                           [--seed 7] [--no-pin-redis] [--profile] [--no-save]
    python bench/ingest.py --partitions 2 --workers 2 [--events 200000] [--runs 3]
    python bench/ingest.py --scaling [--events 200000] [--runs 3]

Fills a fresh embedded Redis with a deterministic, realistic mix of hits (pipelined XADDs
of ``Hit.to_json()``, as the collectors write them), then times ``Worker.run(once=True)``
in this process pinned to the first core, the Redis server pinned to the other(s). The
mix: 70 % consented pixel page views from ``--browsers`` cookies, 15 % unconsented page
views (aggregate only), 10 % server-side track calls from ``--users`` user ids, 5 %
identify calls that link a cookie to an email (and a third of them a phone). It checks
the outcome too: every consented event in Parquet exactly once, the counters matching,
and the persons per tier what the mix implies (each browser ``low``; ``medium`` once it
identified with an email, ``high`` with a phone too; each server-side user id ``low``).

Printed beside the rate: the floor any worker design pays (only reading and decoding the
same entries: XREADGROUP + JSON), events per worker CPU-second (all its threads), and how
the worker's wall time splits into on CPU, runnable but queued behind other processes (the
noise of a shared machine) and blocked (waiting for Redis's replies or fsync). Then the
Redis-bound ceiling: the events per second Redis itself could serve the worker's commands
at on its core (events over the server's CPU seconds in the run), the rate a worker that
cost nothing would reach, with Redis's time per event by command (INFO commandstats).

``--partitions N --workers K`` (issue 17) puts the hits on N partitions and times K worker
processes, each running the fleet (``dmp.ingest.fleet``, as ``dmp worker`` does), from the
moment all K are up until ``dmp status`` counts every hit stored and nothing pending;
nothing is pinned (the workers and Redis share the machine's cores). ``--scaling`` runs
1 partition / 1 worker (the baseline), 2 partitions / 1 worker and 2 partitions / 2
workers on the same hits, alternating, ``--runs`` rounds, and prints the medians and the
scaling ratio (target ≥ 1.6× with 2 workers on 2 partitions, 2 cores).

``--profile`` runs the worker under cProfile instead (the rate it prints is then the
profiled, slower one), prints the top 15 functions by cumulative and by own time, and
saves the whole profile to ``bench/results/ingest-<events>.prof``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing
import os
import pstats
import random
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import redis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from runlog import append, commit  # noqa: E402  (bench/ is the script's folder)

from dmp.config import load_config  # noqa: E402
from dmp.ingest import stream  # noqa: E402
from dmp.ingest.eventlog import scan_events  # noqa: E402
from dmp.ingest.fleet import Fleet  # noqa: E402
from dmp.ingest.worker import Worker, status  # noqa: E402
from dmp.records import Hit  # noqa: E402
from dmp.storage import keyspace, redisserver  # noqa: E402

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


def say_run(line: str, result: dict, want: dict) -> None:
    """Print one run's line with its checks, and what was expected if one failed."""
    failed = [name for name, ok in result["checks"].items() if not ok]
    print(
        f"{line}, checks " + ("all passed" if not failed else "FAILED: " + ", ".join(failed)),
        flush=True,
    )
    if failed:
        print(f"  expected {json.dumps(want)}\n  got {json.dumps(result)}", flush=True)


def outcome_checks(r, config, want: dict) -> tuple[int, dict[str, bool]]:
    """Return the event log's rows and the checks every run makes of what it stored:
    each consented hit once in Parquet, the status counts, the persons per tier."""
    state = status(r)
    events = scan_events(config.events_dir)
    rows = events.select(pl.len()).collect().item()
    unique = events.select(pl.col("event_id").n_unique()).collect().item()
    return rows, {
        "parquet_rows == consented": rows == want["stored"],
        "event ids unique": unique == rows,
        "status events_stored == rows": state["events_stored"] == rows,
        "status events_aggregate == unconsented": (state["events_aggregate"] == want["aggregate"]),
        "status pending == 0": state["pending"] == 0,
        "persons per tier as the mix implies": state["persons"] == want["persons"],
    }


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
            hits.append(
                Hit(
                    **base,
                    source="pixel",
                    type="page",
                    event="page",
                    consent=CONSENTED,
                    uid=uid,
                    url=f"https://acme.de/p/{page}",
                    title=f"Seite {page}",
                    topics=[TOPICS[page % 8], TOPICS[(page // 8) % 8]],
                    ip="203.0.113.0",
                    user_agent=AGENTS[page % 5],
                )
            )
        elif roll < 0.85:
            hits.append(
                Hit(
                    **base,
                    source="pixel",
                    type="page",
                    event="page",
                    consent={"analytics": False},
                    url=f"https://acme.de/p/{page}",
                    topics=[TOPICS[page % 8]],
                    user_agent=AGENTS[page % 5],
                )
            )
        elif roll < 0.95:
            hits.append(
                Hit(
                    **base,
                    source="api",
                    type="track",
                    event="Demo Requested",
                    channel="server",
                    trusted=True,  # a server key's (the public key's would be a claim)
                    user_id=f"u{rnd.randrange(users):06d}",
                    properties={"plan": "pro", "seats": 5},
                )
            )
        else:
            who = rnd.randrange(browsers)
            traits = {"email": f"person{who}@firma{who % 997}.de", "firstName": "Kim"}
            if who % 3 == 0:
                traits["phone"] = f"+49 30 {who:07d}"
            hits.append(
                Hit(
                    **base,
                    source="tag",
                    type="identify",
                    event="identify",
                    consent=CONSENTED,
                    uid=f"b{who:07d}xxxxxxxxxxxx",
                    traits=traits,
                    user_agent=AGENTS[who % 5],
                )
            )
    return hits


def expected(hits: list[Hit]) -> dict:
    """Return what ingesting ``hits`` must leave behind: stored, aggregate and tier counts."""
    uids, emails, phones, users = set(), set(), set(), set()
    stored = aggregate = 0
    for h in hits:
        if h.source == "pixel" and not h.uid:
            aggregate += 1
            continue
        stored += 1
        if h.user_id:
            users.add(h.user_id)
        if h.uid:
            uids.add(h.uid)
            if h.traits.get("email"):
                emails.add(h.uid)
            if h.traits.get("phone"):
                phones.add(h.uid)
    high = len(emails & phones)
    return {
        "stored": stored,
        "aggregate": aggregate,
        "persons": {
            "low": len(uids - emails) + len(users),
            "medium": len(emails) - high,
            "high": high,
        },
    }


def fill(r, hits: list[Hit], partitions: int = 1) -> None:
    """Append hits to the stream (or the partitions' streams) as collectors do, in chunks."""
    for start in range(0, len(hits), 5000):
        stream.enqueue(r, hits[start : start + 5000], {}, atomic=False, partitions=partitions)


def decode_only(r, count: int) -> float:
    """Return seconds to read and decode every entry once (the baseline floor)."""
    stream.ensure_group(r)
    r.xgroup_create(keyspace.partition(0).stream, "bench-baseline", id="0")
    started = time.perf_counter()
    seen = 0
    while seen < count:
        reply = r.xreadgroup("bench-baseline", "b", {keyspace.partition(0).stream: ">"}, count=2000)
        if not reply:
            break
        entries = reply[0][1]
        Hit.many_from_json([f["h"].encode() for _, f in entries])
        seen += len(entries)
    elapsed = time.perf_counter() - started
    r.xgroup_destroy(keyspace.partition(0).stream, "bench-baseline")
    return elapsed


def pin_redis(server: redisserver.EmbeddedServer, cores: list[int]) -> str:
    """Pin the embedded Redis to every core but the first; return where it runs."""
    others = set(cores[1:]) or {cores[0]}
    try:
        pid = int((server.directory / "redis.pid").read_text())
        os.sched_setaffinity(pid, others)
    except (OSError, ValueError) as exc:
        return f"not pinned ({exc})"
    return ",".join(map(str, sorted(others)))


def sched_seconds() -> tuple[float, float]:
    """Return (the process's CPU seconds, seconds this thread was runnable but waiting).

    CPU counts every thread, the worker's flush thread included (it shares the pinned
    core). The second is what other processes on a shared core cost the worker loop;
    the rest of the wall time is time blocked, waiting for Redis's replies or fsync.
    """
    try:
        _, queued, _ = Path("/proc/thread-self/schedstat").read_text().split()
    except (OSError, ValueError):
        return time.process_time(), float("nan")
    return time.process_time(), int(queued) / 1e9


def cpu_seconds(server: redisserver.EmbeddedServer) -> float:
    """Return the CPU seconds the embedded Redis server has used so far."""
    try:
        pid = int((server.directory / "redis.pid").read_text())
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def command_costs(stats: dict, events: int, top: int = 8) -> dict[str, float]:
    """Return the ``top`` commands by Redis's time inside them, µs per event (INFO
    commandstats: ``cmdstat_<name>`` with ``usec``)."""
    spent = {k.removeprefix("cmdstat_"): v["usec"] for k, v in stats.items() if "usec" in v}
    ranked = sorted(spent.items(), key=lambda kv: -kv[1])[:top]
    return {name: round(usec / events, 2) for name, usec in ranked}


def run_once(args: argparse.Namespace, hits: list[Hit], want: dict) -> dict:
    """Ingest ``hits`` on a fresh embedded Redis; return the figures."""
    root = Path(tempfile.mkdtemp(prefix="dmp-ingest-"))
    server = redisserver.attach_embedded(root)
    r = redisserver.connect(server.url)
    cores = sorted(os.sched_getaffinity(0))
    try:
        started = time.perf_counter()
        fill(r, hits)
        fill_s = time.perf_counter() - started
        redis_cores = "not pinned" if args.no_pin_redis else pin_redis(server, cores)
        os.sched_setaffinity(0, {cores[0]})  # one core for the worker
        baseline = decode_only(r, len(hits))
        settings = {"redis_url": server.url, "data_dir": root / "data", **args.setting}
        config = load_config(settings, env={})
        worker = Worker(r, config)
        profiler = cProfile.Profile() if args.profile else None
        r.config_resetstat()  # the command stats below: the worker's commands only
        redis_cpu, (cpu, queued) = cpu_seconds(server), sched_seconds()
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        handled = worker.run(once=True)
        if profiler:
            profiler.disable()
        elapsed = time.perf_counter() - started
        cpu_now, queued_now = sched_seconds()
        cpu, queued = cpu_now - cpu, queued_now - queued
        redis_cpu = cpu_seconds(server) - redis_cpu
        commands = r.info("commandstats")
        os.sched_setaffinity(0, set(cores))
        memory = r.info("memory")["used_memory"]
        state = status(r)
        rows, checks = outcome_checks(r, config, want)
        checks["every entry handled"] = handled == len(hits)
        result = {
            "events": len(hits),
            "seconds": round(elapsed, 2),
            "events_per_s": round(len(hits) / elapsed),
            "events_per_cpu_s": round(len(hits) / cpu),
            "decode_only_per_s": round(len(hits) / baseline),
            "fill_per_s": round(len(hits) / fill_s),
            "worker_cpu_share": round(cpu / elapsed, 2),
            "redis_cpu_share": round(redis_cpu / elapsed, 2),
            # What Redis alone spends per event on the worker's commands: a worker that
            # cost nothing could go no faster than events / redis_cpu on its core.
            "redis_cpu_us_per_event": round(redis_cpu / len(hits) * 1e6, 1),
            "redis_bound_per_s": round(len(hits) / redis_cpu) if redis_cpu > 0 else None,
            "redis_commands_us_per_event": command_costs(commands, len(hits)),
            "worker_runqueue_share": round(queued / elapsed, 2),
            "worker_blocked_share": round(max(0.0, elapsed - cpu - queued) / elapsed, 2),
            "worker_core": cores[0],
            "redis_cores": redis_cores,
            "stored": rows,
            "aggregate": state["events_aggregate"],
            "persons": state["persons"],
            "pending": state["pending"],
            "redis_used_mb": round(memory / 2**20),
            "exactly_once": all(checks.values()),
            "checks": checks,
        }
        if profiler:
            result["profile"] = report_profile(profiler, len(hits))
        return result
    finally:
        os.sched_setaffinity(0, set(cores))
        r.close()
        discard(server)
        shutil.rmtree(root, ignore_errors=True)


def _worker_process(url: str, settings: dict, ready, stop) -> None:
    """One worker process: register with the fleet, wait for the others, ingest till stop."""
    config = load_config(settings, env={})
    r = redisserver.connect(url)
    halt = threading.Event()
    threading.Thread(target=lambda: (stop.wait(), halt.set()), daemon=True).start()
    if config.stream_partitions > 1:
        fleet = Fleet(r, config)
        fleet.share()  # registered before anybody takes a share: one partition each
        ready.wait()
        fleet.run(halt)
    else:
        ready.wait()
        Worker(r, config).run(stop=halt)


def run_processes(
    args: argparse.Namespace, hits: list[Hit], want: dict, partitions: int, workers: int
) -> dict:
    """Ingest ``hits`` on ``partitions`` partitions with ``workers`` worker processes on a
    fresh embedded Redis; return the figures and the checks."""
    root = Path(tempfile.mkdtemp(prefix="dmp-ingest-"))
    server = redisserver.attach_embedded(root)
    r = redisserver.connect(server.url)
    try:
        stream.ensure_group(r, partitions)
        fill(r, hits, partitions)
        settings = {
            "redis_url": server.url,
            "data_dir": root / "data",
            "stream_partitions": partitions,
            **args.setting,
        }
        config = load_config(settings, env={})
        # fork: the children share the parent's hits and modules; each opens its own Redis.
        ctx = multiprocessing.get_context("fork")
        ready, stop = ctx.Barrier(workers + 1), ctx.Event()
        procs = [
            ctx.Process(target=_worker_process, args=(server.url, settings, ready, stop))
            for _ in range(workers)
        ]
        for proc in procs:
            proc.start()
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        redis_cpu = cpu_seconds(server)
        ready.wait()
        started = time.perf_counter()
        while True:  # done once every hit is counted stored or aggregate, nothing pending
            state = status(r)
            if (
                state["events_stored"] >= want["stored"]
                and state["events_aggregate"] >= want["aggregate"]
                and state["pending"] == 0
            ) or not all(p.is_alive() for p in procs):
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        redis_cpu = cpu_seconds(server) - redis_cpu
        stop.set()
        for proc in procs:
            proc.join(timeout=120)
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        worker_cpu = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime
        state = status(r)
        rows, checks = outcome_checks(r, config, want)
        checks["workers ended cleanly"] = all(p.exitcode == 0 for p in procs)
        return {
            "partitions": partitions,
            "workers": workers,
            "events": len(hits),
            "seconds": round(elapsed, 2),
            "events_per_s": round(len(hits) / elapsed),
            # the workers' CPU includes their start and stop, outside the timed span
            "workers_cpu_s": round(worker_cpu, 1),
            "redis_cpu_share": round(redis_cpu / elapsed, 2),
            "load_average": os.getloadavg()[0],
            "stored": rows,
            "persons": state["persons"],
            "exactly_once": all(checks.values()),
            "checks": checks,
        }
    finally:
        r.close()
        discard(server)
        shutil.rmtree(root, ignore_errors=True)


def main_partitions(args: argparse.Namespace, hits: list[Hit], want: dict) -> None:
    """Time worker processes on partitions (one layout, or the --scaling three), alternating."""
    layouts = [(1, 1), (2, 1), (2, 2)] if args.scaling else [(args.partitions, args.workers)]
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    results: dict[tuple[int, int], list[dict]] = {layout: [] for layout in layouts}
    for run in range(args.runs):
        for partitions, workers in layouts:
            result = run_processes(args, hits, want, partitions, workers)
            results[(partitions, workers)].append(result)
            say_run(
                f"round {run + 1}, {partitions} partition(s) / {workers} worker(s): "
                f"{result['events_per_s']:,} events/s ({result['seconds']} s), load "
                f"{result['load_average']:.2f}",
                result,
                want,
            )
    medians = {
        layout: statistics.median(r["events_per_s"] for r in runs)
        for layout, runs in results.items()
    }
    ok = all(r["exactly_once"] for runs in results.values() for r in runs)
    print()
    print(f"{args.events:,} events, {args.runs} round(s), nothing pinned, {os.cpu_count()} cores")
    print(f"{'partitions / workers':<34}{'median':>12}   runs")
    for (partitions, workers), runs in results.items():
        print(
            f"{f'{partitions} / {workers} events/s':<34}{medians[(partitions, workers)]:>12,.0f}   "
            + " / ".join(f"{r['events_per_s']:,}" for r in runs)
        )
    summary = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "mode": "partitions",
        "events": args.events,
        "browsers": args.browsers,
        "users": args.users,
        "runs": args.runs,
        "settings": args.setting,
        "load_average_before": load,
        "medians": {f"{p}/{w}": rate for (p, w), rate in medians.items()},
        "exactly_once": ok,
        "results": [
            {k: v for k, v in r.items() if k != "checks"} for runs in results.values() for r in runs
        ],
    }
    if args.scaling:
        ratio = medians[(2, 2)] / medians[(2, 1)]
        over_base = medians[(2, 2)] / medians[(1, 1)]
        summary["scaling_ratio"] = round(ratio, 2)
        summary["ratio_over_one_partition"] = round(over_base, 2)
        verdict = "met" if ratio >= 1.6 else "MISSED"
        print(f"{'scaling 2 workers / 1, 2 partitions':<34}{ratio:>12.2f}   (≥ 1.6: {verdict})")
        print(f"{'2 / 2 over 1 partition, 1 worker':<34}{over_base:>12.2f}")
    print(f"{'correct (all checks, all runs)':<34}{'yes' if ok else 'NO':>12}")
    if not args.no_save:
        append("ingest", summary)


def discard(server: redisserver.EmbeddedServer) -> None:
    """Shut the throw-away server down without an RDB save (seconds for a 1M-event set)."""
    conn = redis.Redis(unix_socket_path=str(server.socket), socket_timeout=300)
    try:
        conn.shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # the server closes the connection as it shuts down


def report_profile(profiler: cProfile.Profile, events: int) -> str:
    """Print the top 15 cumulative hot spots; save the whole profile; return its path."""
    out = Path(__file__).resolve().parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"ingest-{events}.prof"
    profiler.dump_stats(path)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(15)
    text.write("\n-- by own time --\n")
    stats.sort_stats("tottime").print_stats(15)
    print(text.getvalue())
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--browsers", type=int, default=50_000, help="distinct cookie ids")
    parser.add_argument("--users", type=int, default=20_000, help="distinct API user ids")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--no-pin-redis", action="store_true", help="leave Redis where the OS puts it"
    )
    parser.add_argument(
        "--set",
        dest="setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a worker setting to override, e.g. --set read_count=5000 (repeatable)",
    )
    parser.add_argument("--partitions", type=int, default=0, help="ingest partitions")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (fleets)")
    parser.add_argument(
        "--scaling", action="store_true", help="1/1, 2/1 and 2/2 partitions/workers, alternating"
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the worker run")
    parser.add_argument("--no-save", action="store_true", help="do not append to bench/results")
    args = parser.parse_args()
    try:
        args.setting = dict(item.split("=", 1) for item in args.setting)
        load_config(args.setting, env={})
    except ValueError as exc:
        parser.error(f"--set: {exc}")
    hits = make_hits(args.events, args.browsers, args.users, args.seed)
    want = expected(hits)
    if args.partitions or args.scaling:
        main_partitions(args, hits, want)
        return
    results = []
    for run in range(args.runs):
        result = run_once(args, hits, want)
        results.append(result)
        say_run(
            f"run {run + 1}: {result['events_per_s']:,} events/s ({result['seconds']} s), "
            f"decode-only floor {result['decode_only_per_s']:,}/s",
            result,
            want,
        )
    rate = statistics.median(r["events_per_s"] for r in results)
    floor = statistics.median(r["decode_only_per_s"] for r in results)
    ok = all(r["exactly_once"] for r in results)
    first = results[0]
    p = first["persons"]
    print()
    print(
        f"worker on core {first['worker_core']}, Redis on core(s) {first['redis_cores']}; "
        f"{args.events:,} events ({args.browsers:,} cookies, {args.users:,} user ids), "
        f"{args.runs} run(s)"
        + (" under cProfile" if args.profile else "")
        + "".join(f", {k}={v}" for k, v in args.setting.items())
    )
    print(f"{'':<34}{'median':>12}   runs")
    print(
        f"{'worker events/s':<34}{rate:>12,.0f}   "
        + " / ".join(f"{r['events_per_s']:,}" for r in results)
    )
    print(
        f"{'decode-only floor events/s':<34}{floor:>12,.0f}   "
        + " / ".join(f"{r['decode_only_per_s']:,}" for r in results)
    )
    print(f"{'share of the floor':<34}{rate / floor:>12.2f}")
    per_cpu = [r["events_per_cpu_s"] for r in results]
    print(
        f"{'events per worker CPU-second':<34}{statistics.median(per_cpu):>12,.0f}   "
        + " / ".join(f"{n:,}" for n in per_cpu)
    )
    shares = {
        k: statistics.median(r[k] for r in results)
        for k in ("worker_cpu_share", "worker_runqueue_share", "worker_blocked_share")
    }
    shares["redis_cpu_share"] = statistics.median(r["redis_cpu_share"] for r in results)
    print(
        f"{'worker on CPU / queued / blocked':<34}{'':>12}   "
        f"{shares['worker_cpu_share']:.0%} / {shares['worker_runqueue_share']:.0%} / "
        f"{shares['worker_blocked_share']:.0%} of the wall time "
        f"(Redis on CPU {shares['redis_cpu_share']:.0%})"
    )
    bound = [r["redis_bound_per_s"] or 0 for r in results]
    print(
        f"{'Redis-bound ceiling events/s':<34}{statistics.median(bound):>12,.0f}   "
        + " / ".join(f"{n:,}" for n in bound)
        + f"   ({statistics.median(bound) / floor:.2f}× the floor; Redis "
        f"{statistics.median(r['redis_cpu_us_per_event'] for r in results)} µs per event)"
    )
    top = ", ".join(f"{k} {v}" for k, v in first["redis_commands_us_per_event"].items())
    print(f"{'Redis µs per event by command':<34}{'':>12}   {top} (first run)")
    print(f"{'stored in Parquet / aggregate':<34}{first['stored']:>12,}   {first['aggregate']:,}")
    print(
        f"{'persons low / medium / high':<34}{'':>12}   "
        f"{p['low']:,} / {p['medium']:,} / {p['high']:,}"
    )
    print(f"{'correct (all checks, all runs)':<34}{'yes' if ok else 'NO':>12}")
    verdict = "met" if rate >= 20_000 else "MISSED"
    print(f"{'target ≥ 20,000 events/s':<34}{verdict:>12}   ({rate / 20_000:.2f}× target)")
    summary = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "commit": commit(),
        "events": args.events,
        "browsers": args.browsers,
        "users": args.users,
        "runs": args.runs,
        "profiled": args.profile,
        "settings": args.setting,
        "median_events_per_s": rate,
        "decode_only_per_s": floor,
        "share_of_decode_floor": round(rate / floor, 2),
        "exactly_once": ok,
        "results": [{k: v for k, v in r.items() if k != "checks"} for r in results],
    }
    if not args.no_save:
        append("ingest", summary)


if __name__ == "__main__":
    main()
