"""Fault: Redis hangs (SIGSTOP) past its clients' socket timeout, then answers again.

A hung Redis makes redis-py raise ``redis.TimeoutError``, which is no
``redis.ConnectionError``: the ingest worker and the segment schedule must ride it out as
an outage (one line each way) and work again once Redis answers, never end their thread.
The clients here wait 0.5 s instead of dmp's 5 s so that the hang is seconds long.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

import pytest
from click.testing import CliRunner

from dmp.config import Config
from dmp.ingest.eventlog import scan_events
from dmp.ingest.fleet import run_forever
from dmp.ingest.worker import status
from dmp.membership import results, schedule
from dmp.storage import keyspace, redisserver
from tests.factories import apply_segments, make_hit, run_synth, send_hits
from tests.served import OwnRedis, wait_for

TIMEOUT = 0.5  # the test clients' socket timeout (dmp's is redisserver.SOCKET_TIMEOUT)


def test_a_client_of_a_hung_redis_raises_a_timeout_within_its_socket_timeout(own_redis: OwnRedis):
    """connect() passes its timeout on: a command to a hung Redis raises
    redis.TimeoutError after the client's retries of 0.5 s each, not a minute later; and
    dmp's clients wait 5 s, whatever redis-py's default is."""
    import redis as redis_lib

    assert redisserver.connect(own_redis.url).connection_pool.connection_kwargs[
        "socket_timeout"
    ] == pytest.approx(redisserver.SOCKET_TIMEOUT)
    r = redisserver.connect(own_redis.url, timeout=TIMEOUT)
    assert r.ping()
    with own_redis.hung():
        started = time.monotonic()
        with pytest.raises(redis_lib.TimeoutError):
            r.ping()
        assert time.monotonic() - started < 20
    assert r.ping()


def test_a_worker_rides_out_a_redis_hung_past_its_socket_timeout(
    own_redis: OwnRedis, own_config: Config, caplog
):
    """run_forever (as `dmp serve`'s worker runs it) against a Redis hung past the socket
    timeout logs one outage line (a TimeoutError), keeps its thread, and stores what was
    sent before and after the hang, each event once."""
    r = redisserver.connect(own_redis.url, timeout=TIMEOUT)
    cfg = dataclasses.replace(own_config, flush_seconds=0.2, segments_every=0)
    send_hits(r, *(make_hit(uid=f"b{i}") for i in range(10)))
    caplog.set_level(logging.INFO, logger="dmp")
    stop = threading.Event()
    worker = threading.Thread(target=run_forever, args=(r, cfg, stop), daemon=True)
    worker.start()
    try:
        wait_for(lambda: status(r)["events_stored"] == 10, 20, "the first 10 events stored")
        with own_redis.hung():
            wait_for(
                lambda: "Redis is unavailable" in caplog.text or not worker.is_alive(),
                60,
                "the worker to meet the hung Redis",
            )
        assert worker.is_alive(), "the worker's thread ended on a Redis error"
        assert "Redis is unavailable: TimeoutError" in caplog.text
        send_hits(r, *(make_hit(uid=f"a{i}") for i in range(10)))
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
    own_redis: OwnRedis, own_config: Config, caplog
):
    """The segment schedule's threads (runs and live lane) meet a Redis hung past the
    socket timeout: each logs one outage line, not a traceback, neither thread ends, and
    a run the API asks for after the hang is run."""
    env = {"DMP_REDIS_URL": own_redis.url, "DMP_DATA_DIR": str(own_config.data_dir)}
    run_synth(CliRunner(env=env), 40, 10, 3)
    r = redisserver.connect(own_redis.url, timeout=TIMEOUT)
    apply_segments(r, SEGMENT)
    quick = dataclasses.replace(own_config, segments_latency=0.05, segments_every=3600)
    caplog.set_level(logging.INFO, logger="dmp")
    stop = threading.Event()
    runner = schedule.start_schedule(r, quick, stop)

    def met() -> bool:
        text = caplog.text
        lane = "live lane) is unavailable" in text or "live segment tick failed" in text
        runs = "segment runs) is unavailable" in text
        return (runs and lane) or not all(t.is_alive() for t in runner.threads)

    try:
        wait_for(lambda: results.latest_run(quick), 60, "the first run")
        first = results.latest_run(quick)["run_id"]
        with own_redis.hung():
            wait_for(met, 60, "both threads to meet the hung Redis")
        assert all(t.is_alive() for t in runner.threads), "a schedule thread ended"
        r.set(keyspace.SEGMENTS_RUN_REQUESTED, 1)
        wait_for(lambda: results.latest_run(quick)["run_id"] != first, 60, "a run after")
    finally:
        stop.set()
        runner.join(30)
    assert "Redis (segment runs) is unavailable: TimeoutError" in caplog.text
    assert "Redis (live lane) is unavailable: TimeoutError" in caplog.text
    assert "Redis (segment runs) is available again" in caplog.text
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR], caplog.text
