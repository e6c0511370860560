"""kill -9 of the embedded Redis under traffic through a real ``dmp serve``: nothing lost.

Pixel hits and Segment batches run against gunicorn while the test kills redis-server;
``dmp serve`` starts it again by itself. Every hit answered with the GIF and every batch
answered 200 (the client retries 503s, as Segment's libraries do) ends up in the event
log exactly once, without anyone restarting anything by hand.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import polars as pl
import pytest
import requests

from tests.served import (
    free_port,
    healthy,
    redis_pid,
    run_dmp,
    serve_env,
    stop_process,
    wait_for,
)

GIF_TYPE = "image/gif"


@pytest.fixture
def serving(tmp_path: Path):
    """Run `dmp serve` (2 web processes, ingest worker, no segment schedule); yield url, dir."""
    data_dir, port = tmp_path / "data", free_port()
    env = {**serve_env(data_dir), "DMP_SEGMENTS_EVERY": "0"}
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dmp", "serve", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: healthy(url), 30, "dmp serve to be healthy")
    yield url, data_dir, log_path, proc.pid
    stop_process(proc)


class Traffic:
    """Threads sending hits until stopped; each keeps the event ids that got their answer."""

    def __init__(self, url: str, key: str, server_key: str) -> None:
        self.url, self.key, self.server_key = url, key, server_key
        self.stop = threading.Event()
        self.answered: list[str] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._pixel, args=(n,)) for n in range(2)] + [
            threading.Thread(target=self._batches)
        ]

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def _pixel(self, n: int) -> None:
        session, i = requests.Session(), 0
        while not self.stop.is_set():
            event_id = f"px{n}-{i:07d}"
            query = {
                "k": self.key,
                "id": event_id,
                "consent": "analytics",
                "url": "https://acme.de/",
            }
            try:
                resp = session.get(f"{self.url}/p.gif", params=query, timeout=10)
            except requests.RequestException as exc:
                self._fail(f"pixel {event_id}: {exc}")
                continue
            if resp.status_code == 200 and resp.headers["Content-Type"] == GIF_TYPE:
                with self._lock:
                    self.answered.append(event_id)
            else:
                self._fail(f"pixel {event_id}: {resp.status_code}")
            i += 1

    def _batches(self) -> None:
        session, b = requests.Session(), 0
        auth = "Basic " + base64.b64encode(f"{self.server_key}:".encode()).decode()
        while not self.stop.is_set():
            ids = [f"api-{b:05d}-{m:02d}" for m in range(10)]
            body = {
                "batch": [
                    {"type": "track", "event": "Visited", "userId": f"u{b}", "messageId": mid}
                    for mid in ids
                ]
            }
            for _attempt in range(100):  # as Segment's clients: retry 5xx with a pause
                try:
                    resp = session.post(
                        f"{self.url}/v1/batch",
                        json=body,
                        headers={"Authorization": auth},
                        timeout=10,
                    )
                except requests.RequestException:
                    time.sleep(0.2)
                    continue
                if resp.status_code == 200:
                    with self._lock:
                        self.answered.extend(ids)
                    break
                assert resp.status_code == 503, resp.text
                assert resp.headers.get("Retry-After")
                time.sleep(0.2)
            b += 1

    def _fail(self, what: str) -> None:
        with self._lock:
            self.failures.append(what)


def _stored(data_dir: Path) -> list[str]:
    files = list((data_dir / "events").rglob("*.parquet"))
    if not files:
        return []
    return pl.read_parquet(files, columns=["event_id"])["event_id"].to_list()


def _redis_pid(data_dir: Path, _serve_pid: int) -> int:
    return redis_pid(data_dir)


def _worker_pid(_data_dir: Path, serve_pid: int) -> int:
    """Return the pid of serve's ingest worker (``dmp worker``, a descendant of serve)."""
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args[1:4] == [b"-m", b"dmp", b"worker"] and serve_pid in _ancestors(int(entry.name)):
            return int(entry.name)
    raise AssertionError("no ingest worker")


def _ancestors(pid: int) -> list[int]:
    out = []
    for _ in range(4):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        out.append(pid)
    return out


@pytest.mark.parametrize("victim", [_redis_pid, _worker_pid], ids=["redis-server", "worker"])
def test_every_answered_hit_is_stored_once_across_a_kill(serving, victim):
    """kill -9 redis-server or the ingest worker mid-traffic: serve restarts it by itself;
    every hit answered with the GIF or 200 is stored exactly once."""
    url, data_dir, log_path, serve_pid = serving
    added = run_dmp(data_dir, "sites", "add", "Acme GmbH", "--domain", "acme.de")
    key = added.strip().splitlines()[-1]
    created = run_dmp(data_dir, "keys", "create", "--scope", "server", "--site", "acme-gmbh")
    with Traffic(url, key, created.strip().splitlines()[-1]) as traffic:
        time.sleep(1.5)
        first = victim(data_dir, serve_pid)
        os.kill(first, signal.SIGKILL)
        time.sleep(4.0)  # the outage, the restart and traffic after it
    assert not traffic.failures, traffic.failures[:5]
    deadline = time.monotonic() + 10
    while victim(data_dir, serve_pid) == first:  # a new one, started by dmp serve itself
        assert time.monotonic() < deadline, "dmp serve did not start it again"
        time.sleep(0.2)
    answered = traffic.answered
    assert len(answered) > 100 and any(a.startswith("api-") for a in answered)
    deadline = time.monotonic() + 90
    stored = _stored(data_dir)
    while len(stored) < len(answered) and time.monotonic() < deadline:
        time.sleep(0.5)
        stored = _stored(data_dir)
    assert len(stored) == len(set(stored)), "an event was stored twice"
    missing = set(answered) - set(stored)
    assert not missing, f"{len(missing)} answered hits lost, e.g. {sorted(missing)[:5]}"
    api = sum(a.startswith("api-") for a in answered)
    print(f"answered and stored once: {len(answered) - api} pixel hits, {api} batch messages")
    log_text = log_path.read_text()
    assert log_text.count("Traceback") == 0, log_text[-3000:]
