"""`dmp serve`, `dmp worker` and `dmp status`: running dmp and seeing how it is."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

import click
import redis

from collectors import tcfpurposes
from dmp.cli.context import Context, fail, pass_ctx, print_json
from dmp.ingest import fleet, spool, stream, worker
from dmp.ingest.livefeed import LiveFeed
from dmp.membership.schedule import start_schedule
from dmp.storage import keyspace, recenthits
from exporters.schedule import start_schedule as start_exports


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--workers", default=2, show_default=True, type=click.IntRange(1, 64), help="Web processes."
)
@click.option(
    "--threads",
    default=4,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Threads per web process.",
)
@click.option(
    "--no-worker",
    "no_ingest",
    is_flag=True,
    help="Only collect and serve: run `dmp worker` processes elsewhere (stateless collectors).",
)
@click.option("--no-ingest", "no_ingest", is_flag=True, hidden=True)  # the old name
@click.option(
    "--lookup-port",
    type=click.IntRange(0, 65535),
    help="Port of the lookup processes (GET /api/v1/lookup for ad tools)  [default: PORT+1; "
    "0: none, lookups on PORT only]",
)
@click.option(
    "--lookup-processes",
    default=2,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Lookup processes sharing the lookup port.",
)
@pass_ctx
def serve(
    obj: Context,
    host: str,
    port: int,
    workers: int,
    threads: int,
    no_ingest: bool,
    lookup_port: int | None,
    lookup_processes: int,
) -> None:
    """Serve the pixel, tag, Segment API and admin API, and run the ingest worker.

    Ad tools' lookups are also answered on a port of their own (--lookup-port) by lean
    processes that keep their p99 to a few milliseconds at thousands of requests/s.
    """
    from dmp.serve.server import Lookups
    from dmp.serve.server import serve as run

    try:  # what every web process would refuse at its start: said once, before any starts
        tcfpurposes.of_config(obj.config)
    except tcfpurposes.RuleError as exc:
        fail(f"DMP_TCF_ADS / DMP_TCF_ANALYTICS / DMP_TCF_VENDOR_ID: {exc}")
    if lookup_port == port:
        fail("--lookup-port: the lookup processes need a port of their own, not --port")
    from dmp.serve.sockets import port_sockets, web_sockets

    try:  # bound here, before anything starts, and held: no one else can share the port
        web = web_sockets(host, port, workers, threads)
    except socket.gaierror as exc:
        fail(f"--host: cannot listen on {host}: {exc.strerror}")
    except OSError as exc:
        fail(f"--port: cannot listen on {host}:{port}: {exc.strerror}")

    explicit = lookup_port is not None
    if lookup_port is None:  # the default, PORT+1: if taken, lookups stay on PORT alone
        lookup_port = port + 1 if port < 65535 else 0
    sockets = []
    if lookup_port:
        try:  # bound here, before any process starts: no one else can share the port
            sockets = port_sockets(host, lookup_port, lookup_processes)
        except OSError as exc:
            if explicit:
                fail(f"--lookup-port: cannot listen on {host}:{lookup_port}: {exc.strerror}")
            logging.getLogger(__name__).warning(
                "no lookup processes: cannot listen on %s:%d (%s); lookups on port %d only"
                " (set --lookup-port)",
                host,
                lookup_port,
                exc.strerror,
                port,
            )
    lookups = Lookups(lookup_port if sockets else 0, tuple(sockets))
    run(obj.config, host, port, workers, threads, not no_ingest, lookups, web)


@click.command("lookups")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8001, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--reuse-port",
    is_flag=True,
    help="Share the port with other lookup processes (dmp serve's, or more of these).",
)
@click.option("--fd", type=int, hidden=True, help="Serve on this inherited socket (dmp serve).")
@click.option("--parent", type=int, hidden=True, help="Exit when this process ends (dmp serve).")
@pass_ctx
def lookups_cmd(
    obj: Context, host: str, port: int, reuse_port: bool, fd: int | None, parent: int | None
) -> None:
    """Answer only ad tools' lookups (GET /api/v1/lookup) and /healthz: one lean process.

    `dmp serve` starts two on its --lookup-port. To serve more lookups, start more with
    --reuse-port on that port (the kernel spreads connections among them), here or on
    other hosts.
    """
    import socket

    from dmp.serve import lookups
    from dmp.serve.sockets import listening_socket
    from dmp.storage.redisserver import attach_embedded, connect

    if fd is not None:
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
    else:
        try:
            sock = listening_socket(host, port, reuse_port=reuse_port)
        except OSError as exc:
            fail(f"--port: cannot listen on {host}:{port}: {exc.strerror or exc}")
    if parent:
        threading.Thread(target=_end_with, args=(parent,), daemon=True).start()
    # A Redis away at start is ridden out: lookups answer 503 until it is back. Its
    # calls time out after REDIS_SECONDS: a bid's budget, not the CLI's 5 s.
    url = obj.config.redis_url or attach_embedded(obj.config.data_dir).url
    server = lookups.LookupServer(connect(url, timeout=lookups.REDIS_SECONDS), obj.config)
    where = sock.getsockname()
    logging.getLogger(__name__).info("lookups on %s:%d", where[0], where[1])
    lookups.run(server, sock)


def _end_with(parent: int) -> None:
    """Send this process SIGTERM once the process ``parent`` is gone."""
    _watch_parent(parent, threading.Event())
    os.kill(os.getpid(), signal.SIGTERM)


def _watch_parent(parent: int, stop: threading.Event) -> None:
    """Set ``stop`` once the process ``parent`` is gone (we were re-parented)."""
    while not stop.wait(1.0):
        if os.getppid() != parent:
            logging.getLogger(__name__).warning("parent %d is gone; stopping", parent)
            stop.set()


@click.command("worker")
@click.option("--once", is_flag=True, help="Drain everything pending, then exit.")
@click.option("--parent", type=int, hidden=True, help="Exit when this process ends (dmp serve).")
@pass_ctx
def worker_cmd(obj: Context, once: bool, parent: int | None) -> None:
    """Run the ingest worker (stream to identity, profiles and the Parquet event log), the
    segment schedule (DMP_SEGMENTS_EVERY, DMP_SEGMENTS_LATENCY) and the exports (each
    destination on its own schedule)."""
    stop = threading.Event()
    if not once:
        # Long-running (as `dmp serve` runs it): a Redis away at start is ridden out like
        # one that goes away later (one log line), not an exit and a restart loop.
        from dmp.storage.redisserver import connect_config

        r = connect_config(obj.config)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        if parent:
            threading.Thread(target=_watch_parent, args=(parent, stop), daemon=True).start()
        feed = LiveFeed()  # the ingest's rows to the live lane, before their flush
        schedule = start_schedule(r, obj.config, stop, feed)
        exports = start_exports(r, obj.config, stop)
        fleet.run_forever(r, obj.config, stop, feed)
        schedule.join(timeout=20)  # a run under way finishes (dmp serve waits 30 s)
        exports.join(timeout=5)  # a sync stops before its next batch; the next one resumes
        return
    r = obj.redis
    n = obj.config.stream_partitions
    stream.ensure_group(r, n)
    total = stream.pending_count(r)
    done = 0
    for p in range(n):  # one partition after the other (each under its own lease)
        ingest = worker.Worker(r, obj.config, p)
        if total:
            with click.progressbar(length=total, label="ingesting", file=sys.stderr) as bar:
                done += ingest.run(once=True, progress=bar.update)
        else:
            done += ingest.run(once=True)
    state = worker.status(r)
    by = f"{done} entries by this worker; " if done else ""
    click.echo(
        f"nothing pending ({by}{state['events_stored']} events stored in total, "
        f"{state['events_aggregate']} counted in aggregate)"
        if state["pending"] == 0
        else f"{by}{state['pending']} entries still pending"
    )


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def status(obj: Context, as_json: bool) -> None:
    """Show stored and aggregate event counts, persons by tier, pending hits (and any
    spooled while Redis was away), the segments (how many, the last run, how long ago) and
    the hits refused or set aside in the last hour, by reason.

    Warns on stderr when no dmp server runs for the data dir, and when no ingest worker
    runs (pending hits then wait; with --json, worker_running says so).
    """
    state = worker.status(obj.redis)
    state["spooled_bytes"] = spool.spooled_bytes(obj.config.data_dir)
    state["worker_running"] = worker.running(obj.redis)
    recent = recenthits.last_hour(obj.redis)
    state["refused_last_hour"] = recent.to_json()
    state["segments"] = _segments_state(obj.redis)
    if not state["worker_running"] and not as_json:  # JSON says it in worker_running
        click.echo(
            "dmp: warning: no ingest worker runs for this store: hits wait on the stream"
            f" (now {state['pending']:,}) until `dmp serve` or `dmp worker` runs",
            err=True,
        )
    if as_json:
        print_json(state)
        return
    click.echo(f"events stored     {state['events_stored']:>12,}")
    click.echo(f"events aggregate  {state['events_aggregate']:>12,}")
    for tier, count in state["persons"].items():
        click.echo(f"persons {tier:<9} {count:>12,}")
    click.echo(f"pending           {state['pending']:>12,}")
    if len(state["partitions"]) > 1:
        for part in state["partitions"]:
            holder = part["worker"] or "no worker"
            click.echo(f"  partition {part['partition']:<5} {part['pending']:>12,}  ({holder})")
    if state["spooled_bytes"]:  # hits waiting for Redis in collector processes' spools
        click.echo(f"spooled bytes     {state['spooled_bytes']:>12,}")
    seg = state["segments"]
    click.echo(f"segments          {seg['defined']:>12,}")
    if seg["last_run"]:
        run = seg["last_run"]
        ago = max(0, time.time() - run["as_of"] / 1000)
        click.echo(
            f"last run          {run['memberships']:>12,} memberships, {ago:,.0f} s ago"
            f" ({seg['live_moves_since']:,} live moves since)"
        )
    _echo_recent(recent)


def _segments_state(r: redis.Redis) -> dict[str, Any]:
    """Return what ``dmp status`` says of the segments: how many, the last run, live moves."""
    from dmp.membership import results

    last = (results.run_records(r, 1) or [None])[0]
    return {
        "defined": r.scard(keyspace.SEGMENTS),
        "last_run": None
        if last is None
        else {
            "run_id": last["run_id"],
            "as_of": last["as_of"],
            "memberships": sum(last["members"].values()),
            "incremental": last["incremental"],
        },
        "live_moves_since": r.zcard(keyspace.SEGMENTS_LIVE),
    }


def _echo_recent(recent: recenthits.RecentHits) -> None:
    """Print the last hour's refused and set-aside hits by reason (nothing when none)."""
    if not recent.total:
        return
    click.echo("refused or set aside in the last hour")
    for reason, count in recent.by_reason.items():
        where = ", ".join(
            f"{collector} {per[reason]:,}"
            for collector, per in recent.by_collector.items()
            if reason in per
        )
        click.echo(f"  {reason:<20} {count:>10,}  ({where})")
