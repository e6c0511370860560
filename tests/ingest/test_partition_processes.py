"""Ingest in partitions with real processes: two `dmp serve --no-worker` and two
`dmp worker` on one embedded Redis, four partitions; one worker killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import requests

from dmp.ingest import stream
from dmp.people import profiles
from dmp.people.identity import Identifier, IdKind
from dmp.storage import redisserver
from tests.factories import make_hit
from tests.served import free_port, healthy, run_dmp, serve_env, stop_process, wait_for

PARTITIONS = 4


class Fleet:
    """Two collectors and two ingest workers on one data dir (one embedded Redis)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.env = {
            **serve_env(data_dir),
            "DMP_STREAM_PARTITIONS": str(PARTITIONS),
            "DMP_LEASE_SECONDS": "3",  # a killed worker's partitions are free within 3 s
            "DMP_SEGMENTS_EVERY": "0",
        }
        self.procs: list[subprocess.Popen] = []
        self.urls: list[str] = []
        self.workers: list[subprocess.Popen] = []

    def _start(self, *args: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dmp", *args],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        return proc

    def start(self) -> None:
        """Start both collectors (the first starts the embedded Redis), then both workers."""
        for _ in range(2):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            proc = self._start("serve", "--no-worker", "--port", str(port), "--workers", "1")
            wait_for(lambda u=url, p=proc: healthy(u) or p.poll() is not None, 30, "serve")
            assert proc.poll() is None
            self.urls.append(url)
        self.workers = [self._start("worker") for _ in range(2)]

    def stop(self) -> None:
        """Stop the workers first, then the collectors (the first one stops Redis)."""
        for proc in reversed(self.procs):
            stop_process(proc)

    def status(self) -> dict:
        """Return `dmp status --json`."""
        return json.loads(run_dmp(self.data_dir, "status", "--json"))

    def holders(self) -> dict[int, int | None]:
        """Return each partition's lease holder as the pid in its token (None: free)."""
        found = {}
        for part in self.status()["partitions"]:
            token = part["worker"]
            found[part["partition"]] = int(token.split("/")[1]) if token else None
        return found


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    """Run two `dmp serve --no-worker` and two `dmp worker`; stop them all after."""
    run = Fleet(tmp_path / "data")
    try:
        run.start()
        yield run
    finally:
        run.stop()


def _person(fleet: Fleet, kind: IdKind, value: str) -> str | None:
    r = redisserver.connect(redisserver.locate_server(fleet.data_dir).url)
    try:
        return profiles.find_person(r, Identifier(kind, value))
    finally:
        r.close()


def _visit(url: str, key: str, i: int) -> tuple[requests.Session, str]:
    """A consenting browser's first page view; return its session and cookie."""
    browser = requests.Session()
    params = {"k": key, "url": f"https://acme.de/p{i}", "consent": "analytics"}
    assert browser.get(f"{url}/p.gif", params=params, timeout=10).status_code == 200
    return browser, browser.cookies["dmp_uid"]


def _identify(url: str, key: str, i: int) -> None:
    """A server identify of user i with its email, sent twice (a client's retry)."""
    message = {
        "userId": f"user-{i}",
        "messageId": f"identify-user-{i}",
        "traits": {"email": f"p{i}@acme.de"},
    }
    for _ in range(2):
        resp = requests.post(f"{url}/v1/identify", auth=(key, ""), json=message, timeout=10)
        assert resp.status_code == 200


def _link(browser: requests.Session, url: str, key: str, i: int) -> None:
    """The browser's tag tells its email (the beacon sent twice: a replay)."""
    beacon = {
        "k": key,
        "consent": ["analytics"],
        "events": [
            {"type": "identify", "id": f"link-{i:04d}", "traits": {"email": f"p{i}@acme.de"}}
        ],
    }
    for _ in range(2):
        resp = browser.post(f"{url}/collect", data=json.dumps(beacon), timeout=10)
        assert resp.status_code == 204


def _events(fleet: Fleet) -> pl.DataFrame:
    return pl.read_parquet(fleet.data_dir / "events" / "**" / "*.parquet")


def test_two_collectors_and_two_workers_store_every_event_once(fleet: Fleet):
    """Hits through the pixel, the tag and the Segment API of both collectors, with
    replays, are each stored once; identities crossing partitions end as one person;
    each partition is leased by one worker, and after a kill -9 of one worker the other
    takes its partitions over with nothing lost or doubled."""
    public = run_dmp(fleet.data_dir, "sites", "add", "Acme GmbH", "--domain", "acme.de").split()[-1]
    server = run_dmp(
        fleet.data_dir, "keys", "create", "--scope", "server", "--site", "acme-gmbh"
    ).split()[-1]
    cookies, crossing = {}, 0
    for i in range(16):
        here, there = fleet.urls[i % 2], fleet.urls[1 - i % 2]
        browser, cookie = _visit(here, public, i)
        _identify(there, server, i)
        _link(browser, here, public, i)
        cookies[i] = cookie
        by_cookie = stream.partition_of(make_hit(uid=cookie), PARTITIONS)
        crossing += by_cookie != stream.partition_of(make_hit(uid="", user_id=f"user-{i}"), 4)
    assert crossing  # some identities cross partitions (cookies are random)
    expected = 16 * 3
    wait_for(lambda: fleet.status()["events_stored"] == expected, 60, "the first hits stored")
    pids = {w.pid for w in fleet.workers}

    def split() -> dict[int, int | None] | None:
        held = fleet.holders()
        return held if set(held.values()) == pids else None

    holders = wait_for(split, 30, "both workers to hold partitions")
    assert sorted(list(holders.values()).count(w.pid) for w in fleet.workers) == [2, 2]
    for i, cookie in cookies.items():
        pid = _person(fleet, IdKind.UID, cookie)
        assert pid is not None
        assert pid == _person(fleet, IdKind.EMAIL, f"p{i}@acme.de")
        assert pid == _person(fleet, IdKind.USER, f"user-{i}")
    # Hits keep coming through both collectors while one worker is killed.
    sent = []
    stop = threading.Event()

    def traffic() -> None:
        browsers = [_visit(fleet.urls[n % 2], public, 100 + n)[0] for n in range(4)]
        n = 0
        while not stop.is_set():
            params = {"k": public, "url": f"https://acme.de/later/{n}", "consent": "analytics"}
            gif = browsers[n % 4].get(f"{fleet.urls[n % 2]}/p.gif", params=params, timeout=10)
            assert gif.status_code == 200
            sent.append(n)
            n += 1
            time.sleep(0.01)

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        time.sleep(1.0)
        victim, survivor = fleet.workers
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        wait_for(lambda: set(fleet.holders().values()) == {survivor.pid}, 30, "the takeover")
        time.sleep(1.0)
    finally:
        stop.set()
        sender.join()
    assert len(sent) > 50  # hits came in before, during and after the takeover
    total = expected + 4 + len(sent)
    wait_for(lambda: fleet.status()["events_stored"] == total, 60, "every hit stored")
    state = fleet.status()
    assert state["pending"] == 0
    events = _events(fleet)
    assert events.height == total and events["event_id"].n_unique() == total
    later = events.filter(pl.col("url").str.contains("/later/"))
    assert later.height == len(sent) and later["url"].n_unique() == len(sent)
