"""Fault: Redis hangs (SIGSTOP) past its clients' socket timeout, then answers again.

A hung Redis makes redis-py raise ``redis.TimeoutError``, which is no
``redis.ConnectionError``: the ingest worker and the segment schedule must ride it out as
an outage (one line each way) and work again once Redis answers, never end their thread.
The clients here wait 0.5 s instead of dmp's 5 s so that the hang is seconds long.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from dmp.cli import cli
from dmp.config import Config, load_config
from dmp.ingest import stream
from dmp.ingest.eventlog import scan_events
from dmp.ingest.worker import run_forever, status
from dmp.membership import definitions, runs, schedule
from dmp.storage import keyspace, redisserver
from segments.definition import load_definitions
from tests.ingest.test_worker import hit
from tests.served import OwnRedis as Server
from tests.served import wait_for

TIMEOUT = 0.5  # the test clients' socket timeout (dmp's is redisserver.SOCKET_TIMEOUT)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """Return a private embedded Redis server (resumed and stopped after the test)."""
    srv = Server(tmp_path / "redis-own")
    yield srv
    with contextlib.suppress(OSError, ValueError):
        os.kill(_pid(srv), signal.SIGCONT)
    srv.stop()


@pytest.fixture
def own(server: Server, tmp_path: Path) -> Config:
    """Return a config on the private server with a fresh data dir."""
    return load_config({"redis_url": server.url, "data_dir": tmp_path / "data"}, env={})


def _pid(server: Server) -> int:
    return int((server.info.directory / "redis.pid").read_text())


@contextlib.contextmanager
def _hung(server: Server) -> Iterator[None]:
    """Stop the redis-server process (it keeps its socket but answers nothing) until exit."""
    pid = _pid(server)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_client_of_a_hung_redis_raises_a_timeout_within_its_socket_timeout(server: Server):
    """connect() passes its timeout on: a command to a hung Redis raises
    redis.TimeoutError after the client's retries of 0.5 s each, not a minute later; and
    dmp's clients wait 5 s, whatever redis-py's default is."""
    import redis as redis_lib

    assert redisserver.connect(server.url).connection_pool.connection_kwargs[
        "socket_timeout"
    ] == pytest.approx(redisserver.SOCKET_TIMEOUT)
    r = redisserver.connect(server.url, timeout=TIMEOUT)
    assert r.ping()
    with _hung(server):
        started = time.monotonic()
        with pytest.raises(redis_lib.TimeoutError):
            r.ping()
        assert time.monotonic() - started < 20
    assert r.ping()


def test_a_worker_rides_out_a_redis_hung_past_its_socket_timeout(
    server: Server, own: Config, caplog
):
    """run_forever (as `dmp serve`'s worker runs it) against a Redis hung past the socket
    timeout logs one outage line (a TimeoutError), keeps its thread, and stores what was
    sent before and after the hang, each event once."""
    r = redisserver.connect(server.url, timeout=TIMEOUT)
    cfg = dataclasses.replace(own, flush_seconds=0.2, segments_every=0)
    stream.enqueue(r, [hit(uid=f"b{i}") for i in range(10)], {}, atomic=True)
    caplog.set_level(logging.INFO, logger="dmp")
    stop = threading.Event()
    worker = threading.Thread(target=run_forever, args=(r, cfg, stop), daemon=True)
    worker.start()
    try:
        wait_for(lambda: status(r)["events_stored"] == 10, 20, "the first 10 events stored")
        with _hung(server):
            wait_for(
                lambda: "Redis is unavailable" in caplog.text or not worker.is_alive(),
                60,
                "the worker to meet the hung Redis",
            )
        assert worker.is_alive(), "the worker's thread ended on a Redis error"
        assert "Redis is unavailable: TimeoutError" in caplog.text
        stream.enqueue(r, [hit(uid=f"a{i}") for i in range(10)], {}, atomic=True)
        wait_for(lambda: status(r)["events_stored"] == 20, 30, "the events sent after the hang")
        assert status(r)["pending"] == 0
    finally:
        stop.set()
        worker.join(30)
    log = scan_events(cfg.events_dir).collect()
    assert log.height == 20 and log["event_id"].n_unique() == 20
    assert "Redis is available again" in caplog.text
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR], caplog.text


SEGMENT = "id: active\nname: Active\nwhere: {did: {event: page, within_days: 30}}\n"


def test_the_schedule_rides_out_a_redis_hung_past_its_socket_timeout(
    server: Server, own: Config, caplog
):
    """The segment schedule's threads (runs and live lane) meet a Redis hung past the
    socket timeout: each logs one outage line, not a traceback, neither thread ends, and
    a run the API asks for after the hang is run."""
    runner = CliRunner(env={"DMP_REDIS_URL": server.url, "DMP_DATA_DIR": str(own.data_dir)})
    made = runner.invoke(cli, ["synth", "--persons", "40", "--days", "10", "--seed", "3"])
    assert made.exit_code == 0, made.output
    r = redisserver.connect(server.url, timeout=TIMEOUT)
    definitions.apply_definitions(r, load_definitions(SEGMENT, "test.yaml"))
    quick = dataclasses.replace(own, segments_latency=0.05, segments_every=3600)
    caplog.set_level(logging.INFO, logger="dmp")
    stop = threading.Event()
    runner = schedule.start_schedule(r, quick, stop)

    def met() -> bool:
        text = caplog.text
        lane = "live lane) is unavailable" in text or "live segment tick failed" in text
        runs = "segment runs) is unavailable" in text
        return (runs and lane) or not all(t.is_alive() for t in runner.threads)

    try:
        wait_for(lambda: runs.latest_run(quick), 60, "the first run")
        first = runs.latest_run(quick)["run_id"]
        with _hung(server):
            wait_for(met, 60, "both threads to meet the hung Redis")
        assert all(t.is_alive() for t in runner.threads), "a schedule thread ended"
        r.set(keyspace.SEGMENTS_RUN_REQUESTED, 1)
        wait_for(lambda: runs.latest_run(quick)["run_id"] != first, 60, "a run after")
    finally:
        stop.set()
        runner.join(30)
    assert "Redis (segment runs) is unavailable: TimeoutError" in caplog.text
    assert "Redis (live lane) is unavailable: TimeoutError" in caplog.text
    assert "Redis (segment runs) is available again" in caplog.text
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR], caplog.text
