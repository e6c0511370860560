"""The collectors' outbox: hits of a process's request threads sent to Redis together."""

from __future__ import annotations

import threading

from dmp.app import create_app
from dmp.config import load_config
from dmp.ingest.appender import Appender
from dmp.ingest.spool import Spool, spool_dir
from tests.factories import append_from_threads, make_hit, stream_hits
from tests.served import wait_for


def _reads(redis) -> int:
    return int(redis.info("stats")["total_reads_processed"])


def _appender(redis, config, send_every: float) -> Appender:
    spool = Spool(spool_dir(config.data_dir), redis, 10**7)
    return Appender(redis, spool, send_every=send_every)


def _from_threads(redis, appender: Appender) -> int:
    """Append 200 hits from each of eight threads; return the writes Redis read."""
    hits = [[make_hit(event_id=f"t{t}-{i:04d}") for i in range(200)] for t in range(8)]
    reads = append_from_threads(appender, hits, lambda: _reads(redis))
    ids = [h.event_id for h in stream_hits(redis)]
    assert sorted(ids) == sorted(h.event_id for mine in hits for h in mine)  # each once
    return reads


def test_the_hits_of_many_threads_reach_redis_together_each_once(redis, config):
    """Eight threads' 1,600 hits: each on the stream once, in a few dozen writes that
    Redis reads, not one each (each read a wake-up of Redis: 33 µs a pixel hit)."""
    reads = _from_threads(redis, _appender(redis, config, send_every=0.02))
    assert reads <= 1600 / 8, reads  # typically 5-20: one each 20 ms, and the answers


def test_each_request_sends_its_own_hits_with_send_every_zero(redis, config):
    """DMP_COLLECT_SEND_MS=0: no outbox, each thread sends its own hits at once (Redis
    reads some together when they come faster than it reads)."""
    reads = _from_threads(redis, _appender(redis, config, send_every=0))
    assert reads > 1600 / 8, reads


def test_closing_sends_what_the_outbox_holds(redis, config):
    """An orderly exit (gunicorn's too: the appender closes at exit) loses nothing that
    waited in the outbox: it is sent before the appender's threads stop."""
    appender = _appender(redis, config, send_every=0.1)  # the most: hits wait 100 ms
    for i in range(10):
        appender.append([make_hit(event_id=f"close-{i:04d}")], {})
    appender.close()
    assert [h.event_id for h in stream_hits(redis)] == [f"close-{i:04d}" for i in range(10)]


def test_the_outbox_time_is_a_setting(redis_url, tmp_path):
    """DMP_COLLECT_SEND_MS sets it; out of 0-100 ms it is held to the nearest end."""
    for setting, seconds in (("5", 0.005), ("0", 0.0), ("-3", 0.0), ("5000", 0.1)):
        env = {"DMP_COLLECT_SEND_MS": setting}
        config = load_config({"redis_url": redis_url, "data_dir": tmp_path / setting}, env=env)
        app = create_app(config)
        try:
            assert app.extensions["dmp"].appender.send_every == seconds
        finally:
            app.extensions["dmp"].appender.close()


def test_a_full_outbox_makes_the_request_thread_wait_until_the_sender_takes_it(
    redis, config, monkeypatch
):
    """A stalled send (a slow or hung Redis) lets the outbox fill; past MAX_UNREAD hits a
    request thread waits for room instead of the backlog growing without bound."""
    appender = _appender(redis, config, send_every=0.001)
    monkeypatch.setattr(appender, "MAX_UNREAD", 5)
    stalled, real_send = threading.Event(), appender._send

    def stalling_send(*args, **kwargs):
        stalled.wait(30)
        return real_send(*args, **kwargs)

    monkeypatch.setattr(appender, "_send", stalling_send)
    try:
        appender.append([make_hit(event_id="first-0000")], {})  # taken, then its send stalls
        wait_for(lambda: appender._sending, 10, "the sender to take the first hit")
        for i in range(5):  # fills the outbox
            appender.append([make_hit(event_id=f"fill-{i:04d}")], {})
        late = threading.Thread(target=appender.append, args=([make_hit(event_id="late-0000")], {}))
        late.start()
        late.join(0.5)
        assert late.is_alive()  # waiting for room
        stalled.set()
        late.join(10)
        assert not late.is_alive()
        appender.sync()
    finally:
        stalled.set()
        appender.close()
    ids = sorted(h.event_id for h in stream_hits(redis))
    assert ids == sorted(["first-0000", *(f"fill-{i:04d}" for i in range(5)), "late-0000"])


def test_a_hit_whose_answer_a_failed_read_lost_is_spooled_not_lost(redis, config, monkeypatch):
    """A read of Redis's answers that fails in the client (a bug; redis-py drops the
    connection as it fails) loses which answer is whose. Here the lost answer is Redis's
    refusal (out of memory) of the hit: the hit is spooled with every other unanswered one,
    not kept waiting for an answer that will never come (and then lost), and is stored once
    Redis takes writes again. Before, the request that sent it failed, the hit stayed
    unanswered, and a later answer would have been matched to it."""
    appender = _appender(redis, config, send_every=0)  # each request sends its own
    monkeypatch.setattr(appender, "READ_EVERY", 1)  # and reads its answer at once
    failed: list[bool] = []
    conn_class = redis.connection_pool.connection_class
    real_read = conn_class.read_response

    def failing_read(self, *args, **kwargs):
        if failed:
            return real_read(self, *args, **kwargs)
        failed.append(True)
        self.disconnect()  # as redis-py does when a read raises
        raise RuntimeError("a bug in the client")

    redis.config_set("maxmemory", "1")  # every write refused: OOM
    try:
        monkeypatch.setattr(conn_class, "read_response", failing_read)
        appender.append([make_hit(event_id="lost-0000")], {})  # must not raise
        monkeypatch.setattr(conn_class, "read_response", real_read)
        assert failed and appender.spool.active
    finally:
        redis.config_set("maxmemory", "0")
    try:
        wait_for(lambda: not appender.spool.active, 30, "the spool to replay")
        appender.append([make_hit(event_id="next-0000")], {})
        appender.sync()
    finally:
        appender.close()
    assert [h.event_id for h in stream_hits(redis)] == ["lost-0000", "next-0000"]
