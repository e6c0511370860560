"""Soak: millions of pixel hits and Segment-API events through a real ``dmp serve``.

    python bench/soak.py [--pixel 1000000] [--api 1000000] [--clients 4] [--replays 0.05]
                         [--seed 7] [--work-dir DIR] [--keep] [--json] [--no-save]

Starts ``dmp serve`` (2 web processes × 4 threads, its ingest worker, its embedded Redis;
no segment schedule) on a fresh data dir, adds a site and a server key for it, and sends,
from ``--clients`` processes on loopback, ``--pixel`` distinct pixel hits (``GET /p.gif``)
and ``--api`` distinct Segment events (``POST /v1/batch``), interleaved. On top of those,
``--replays`` of them are sent again with the same event id (``id=`` of a pixel hit,
``messageId`` of a message): at once, a little later (while the original may still be in
the worker's buffer or the same read batch, or the same HTTP batch) and much later (after
its flush).

The mix, per client: pixel hits with the ``analytics`` consent from a pool of cookies
(and some from new browsers without one), unconsented hits (no cookie; a few carry a
cookie, which withdraws it), 1 % from a crawler's User-Agent, a tenth without an ``id=``
(the pixel makes one; never replayed). Segment track, page and identify calls from a pool
of users: raw batches of 100 with the server key, a fifth of the events in raw batches
with the public write key (a browser's analytics.js), a fifth through the real
``segment-analytics-python`` client with the server key. A fifth refuse ``analytics`` in
``context.consent`` and a fifth say nothing: stored from the server key, counted only in
aggregate from the public one.

Once everything is answered it waits until the worker has drained the stream (``dmp
status --json``: pending 0) and checks, exactly: events stored and counted in aggregate
equal the distinct events sent (each kind apart, and the event log's rows and the daily
aggregate hashes agree), ``dmp_events_duplicate_total`` equals the replays sent,
``dmp_hits_total`` counts every request as ``ok``, no answer was a 5xx or failed, and the
server is still up, with no traceback in its log and no process started again. Exits 1
on any mismatch.
"""

from __future__ import annotations

import argparse
import base64
import heapq
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import polars as pl
import redis

from dmp.storage import keyspace, redisserver
from dmp.storage.metrics import ingest_partitions

AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
]
CRAWLER = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
PAGES = ["/", "/crm", "/erp", "/preise", "/blog/ki-im-vertrieb", "/whitepaper", "/kontakt"]
TOPICS = ["crm", "erp", "cloud", "security", "ki", "webinar"]
GIF_TYPE = "image/gif"
SET_UID = re.compile(r"dmp_uid=([A-Za-z0-9_-]+);")
VISITORS = 5_000  # cookies per client
USERS = 5_000  # Segment user ids per client
RECONNECT_EVERY = 200  # requests on one keep-alive connection
WEB_PROCESSES = 2  # dmp serve's default, with 4 threads each


@dataclass(frozen=True, slots=True)
class Plan:
    """What a soak sends: distinct events of each kind, replays on top, from how many clients."""

    pixel: int
    api: int
    clients: int = 4
    replays: float = 0.05  # share of the distinct events sent once more
    batch_size: int = 100
    library_share: float = 0.2  # of the Segment events: segment-analytics-python, server key
    public_share: float = 0.2  # of them: raw batches with the public write key (a browser's)
    seed: int = 7


@dataclass(frozen=True, slots=True)
class Row:
    """One check of the soak: what was sent (expected) against what dmp holds."""

    name: str
    expected: int
    observed: int

    @property
    def ok(self) -> bool:
        """Return whether the two agree exactly."""
        return self.expected == self.observed


# --- the server ----------------------------------------------------------------------------


class Server:
    """A ``dmp serve`` subprocess on its own data dir and port, with one site."""

    def __init__(self, work: Path) -> None:
        self.data_dir, self.log_path = work / "data", work / "serve.log"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DMP_")}
        self.env.update(DMP_DATA_DIR=str(self.data_dir), DMP_SEGMENTS_EVERY="0")
        with open(self.log_path, "w") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dmp", "serve", "--port", str(self.port)]
                + ["--workers", str(WEB_PROCESSES), "--threads", "4"],
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_healthy(60)
            added = self.dmp("sites", "add", "Soak GmbH", "--domain", "soak.example.com")
            site_id = json.loads(self.dmp("sites", "list", "--json"))[0]["site_id"]
            created = self.dmp("keys", "create", "--scope", "server", "--site", site_id)
        except BaseException:
            self.stop()
            raise
        self.write_key = added.strip().splitlines()[-1]  # public: the pixel's and browsers'
        self.server_key = created.strip().splitlines()[-1]  # secret: the site's servers'

    def dmp(self, *args: str) -> str:
        """Run a `dmp` command on the server's data dir; return its output."""
        done = subprocess.run(
            [sys.executable, "-m", "dmp", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"dmp {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def status(self) -> dict[str, Any]:
        """Return `dmp status --json`."""
        return json.loads(self.dmp("status", "--json"))

    def healthy(self) -> bool:
        """Return whether the server answers /healthz with 200."""
        try:
            return _get(self.url, "/healthz")[0] == 200
        except OSError:
            return False

    def metrics(self) -> dict[str, float]:
        """Return the samples of /metrics by their name and labels, as written there."""
        status, body = _get(self.url, "/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        samples = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def _wait_healthy(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dmp serve did not come up: {self.log_path.read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM the server and wait for it (kill it after 60 s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _get(url: str, path: str) -> tuple[int, bytes]:
    conn = Connection(url, timeout=10)
    try:
        status, _, body = conn.request("GET", path)
        return status, body
    finally:
        conn.close()


class Connection:
    """A keep-alive HTTP/1.1 connection that costs its client little CPU, so that the
    cores go to the server: http.client (which parses each answer's headers with the email
    package) cost 260 µs of client CPU a pixel hit here, more than the pixel's own code."""

    def __init__(self, url: str, timeout: float = 60) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.host = f"Host: {host}:{port}\r\n".encode()
        self.buffer = b""

    def request(
        self, method: str, target: str, headers: bytes = b"", body: bytes = b""
    ) -> tuple[int, dict[bytes, bytes], bytes]:
        """Send one request (``headers``: raw header lines); return status, headers, body."""
        length = f"Content-Length: {len(body)}\r\n".encode() if body else b""
        head = f"{method} {target} HTTP/1.1\r\n".encode() + self.host + headers + length
        self.sock.sendall(head + b"\r\n" + body)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._receive()
        lines = self.buffer[:end].split(b"\r\n")
        self.buffer = self.buffer[end + 4 :]
        found = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            found[name.strip().lower()] = value.strip()
        if b"content-length" not in found:
            raise ConnectionError(f"an answer without Content-Length: {lines[0]!r}")
        size = int(found[b"content-length"])
        while len(self.buffer) < size:
            self._receive()
        body, self.buffer = self.buffer[:size], self.buffer[size:]
        return int(lines[0].split()[1]), found, body

    def _receive(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


# --- the clients ---------------------------------------------------------------------------


def share(total: int, parts: int, part: int) -> int:
    """Return how many of ``total`` items fall to ``part`` of ``parts`` (the first get one
    more)."""
    return total // parts + (1 if part < total % parts else 0)


class Lane:
    """One client process's traffic: its pixel hits, raw batches and library messages,
    interleaved, with their replays; it counts what it sent and what came back."""

    def __init__(self, plan: Plan, lane: int, url: str, keys: dict[str, str]) -> None:
        self.plan, self.lane, self.key = plan, lane, keys["public"]
        self.rnd = random.Random(plan.seed * 1_000 + lane)
        self.url = url
        self.conn = Connection(url)
        self.batch_headers = {kind: _basic_auth(key) for kind, key in keys.items()}
        self.sent: Counter[str] = Counter()
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.due: list[tuple[int, int, str, Any]] = []  # (tick, seq, kind, payload) replays
        self.order = itertools.count()  # ties in ``due`` go in the order they were planned
        self.batches: dict[str, list[dict[str, Any]]] = {kind: [] for kind in keys}
        self.set_cookie = ""  # of the last answer
        self.requests = 0
        self.cookies: list[str | None] = [f"soak-{lane:03d}-{j:010d}" for j in range(VISITORS)]
        self.library = self._library(url, keys["server"])

    def _library(self, url: str, key: str) -> Any:
        from segment.analytics import Client  # the real client library

        def failed(exc: Exception, batch: list[dict[str, Any]]) -> None:
            with self.lock:
                self.sent["library_failed"] += len(batch)
            self._fail(f"library batch of {len(batch)}: {exc!r}")

        return Client(key, host=url, max_retries=0, on_error=failed, upload_size=100)

    def run(self) -> dict[str, Any]:
        """Send this lane's share of the plan; return its counters and first failures."""
        plan = self.plan
        n_pixel = share(plan.pixel, plan.clients, self.lane)
        n_api = share(plan.api, plan.clients, self.lane)
        total = n_pixel + n_api
        for tick in range(total):
            # Bresenham: pixel hits spread evenly among the Segment events.
            if (tick + 1) * n_pixel // total > tick * n_pixel // total:
                self.pixel_hit(tick)
            else:
                self.api_event(tick)
            while self.due and self.due[0][0] <= tick:
                self.replay(heapq.heappop(self.due))
        while self.due:
            self.replay(heapq.heappop(self.due))
        for kind in self.batches:
            self.post_batch(kind)
        self.library.shutdown()  # flush: waits until the consumer sent everything
        self.conn.close()
        return {"sent": dict(self.sent), "failures": self.failures[:20]}

    def _maybe_replay(self, tick: int, kind: str, payload: Any) -> None:
        """Schedule a replay of this event: at once, soon, or long after its flush."""
        if self.rnd.random() >= self.plan.replays:
            return
        when = self.rnd.random()
        delay = (
            self.rnd.randint(0, 10)
            if when < 0.3
            else self.rnd.randint(10, 2_000)
            if when < 0.7
            else self.rnd.randint(2_000, 50_000)
        )
        heapq.heappush(self.due, (tick + delay, next(self.order), kind, payload))

    def replay(self, item: tuple[int, int, str, Any]) -> None:
        """Send a scheduled replay again, the same way as its original."""
        _, _, kind, payload = item
        self.sent[f"{kind}_replays"] += 1
        if kind == "pixel":
            self.send_pixel(*payload)
        elif kind == "raw":
            self.add_to_batch(*payload)
        else:
            self.send_library(payload)

    # pixel hits

    def pixel_hit(self, tick: int) -> None:
        """Send one distinct pixel hit (consented or not) and maybe schedule its replay."""
        rnd = self.rnd
        consented = rnd.random() < 0.8
        params = {"k": self.key, "url": f"https://soak.example.com{rnd.choice(PAGES)}"}
        if rnd.random() < 0.3:
            params["topics"] = ",".join(rnd.sample(TOPICS, 2))
        if rnd.random() < 0.1:
            params["e"] = "whitepaper_download"
        params["consent"] = rnd.choice(["analytics", "analytics,ads"]) if consented else ""
        with_id = rnd.random() >= 0.1
        if with_id:
            params["id"] = f"px-{self.lane:03d}-{tick:010d}"
        headers = f"User-Agent: {CRAWLER if rnd.random() < 0.01 else rnd.choice(AGENTS)}\r\n"
        visitor = rnd.randrange(VISITORS)
        cookie = self.cookies[visitor]
        if consented and rnd.random() >= 0.05 and cookie:
            headers += f"Cookie: dmp_uid={cookie}\r\n"
        elif not consented and rnd.random() < 0.02 and cookie:
            headers += f"Cookie: dmp_uid={cookie}\r\n"  # the visitor withdraws: it goes
            self.cookies[visitor] = None
            self.sent["pixel_withdrawals"] += 1
        path = "/p.gif?" + urlencode(params)
        self.sent["pixel_distinct"] += 1
        self.sent["pixel_stored" if consented else "pixel_aggregate"] += 1
        issued = self.send_pixel(path, headers.encode())
        if consented and issued and cookie is None:
            self.cookies[visitor] = issued  # the browser keeps the cookie it was given
        if with_id:
            self._maybe_replay(tick, "pixel", (path, headers.encode()))

    def send_pixel(self, path: str, headers: bytes) -> str:
        """GET one pixel URL; count the request, note an answer that is not the GIF, and
        return the cookie the answer set ('' for none)."""
        self.sent["pixel_requests"] += 1
        try:
            status, ctype, _ = self._request("GET", path, headers)
        except (OSError, ValueError) as exc:
            self._fail(f"pixel {path[:80]}: {exc!r}")
            return ""
        if status != 200 or ctype != GIF_TYPE:
            self._answer(status, f"pixel {path[:80]}: {status} {ctype}")
        found = SET_UID.match(self.set_cookie)
        return found.group(1) if found else ""

    # Segment events

    def api_event(self, tick: int) -> None:
        """Add one distinct Segment event to a raw batch or the library's queue."""
        rnd = self.rnd
        channel = rnd.random()
        key = "public" if channel < self.plan.public_share else "server"
        library = key == "server" and channel > 1 - self.plan.library_share
        # Without a consent in the message, a server key's events are stored (the site's
        # own systems); the public key's count only in aggregate (a browser must consent).
        consent = rnd.choices(["refused", "granted", "unsaid"], [0.2, 0.6, 0.2])[0]
        stored = consent == "granted" or (consent == "unsaid" and key == "server")
        message_id = f"api-{self.lane:03d}-{tick:010d}"
        user = rnd.randrange(USERS)
        context: dict[str, Any] = {}
        if consent != "unsaid":
            prefs = {"analytics": consent == "granted"}
            if rnd.random() < 0.5:
                prefs["advertising"] = rnd.random() < 0.5
            context["consent"] = {"categoryPreferences": prefs}
        self.sent["api_distinct"] += 1
        self.sent["api_stored" if stored else "api_aggregate"] += 1
        msg: dict[str, Any] = {"messageId": message_id, "context": context}
        if rnd.random() < 0.9:
            msg["userId"] = f"u-{self.lane:03d}-{user:07d}"
        else:
            msg["anonymousId"] = f"anon-{self.lane:03d}-{user:07d}"
        kind = rnd.random()
        if kind < 0.1:
            msg.update(type="identify", traits={"email": f"u{user}.l{self.lane}@soak.example.com"})
        elif kind < 0.3:
            msg.update(type="page", name="Preise", properties={"url": "https://soak.example.com/p"})
        else:
            msg.update(type="track", event="Feature Used", properties={"feature": "export"})
        if library:
            self.send_library(msg)
            self._maybe_replay(tick, "library", msg)
        else:
            self.add_to_batch(key, msg)
            self._maybe_replay(tick, "raw", (key, msg))

    def add_to_batch(self, key: str, msg: dict[str, Any]) -> None:
        """Add a message to the raw batch under way for a key; post it once it is full."""
        self.batches[key].append(msg)
        if len(self.batches[key]) >= self.plan.batch_size:
            self.post_batch(key)

    def post_batch(self, key: str) -> None:
        """POST the raw batch under way for a key (``server`` or ``public``) to /v1/batch,
        the key as the Basic-auth user."""
        batch, self.batches[key] = self.batches[key], []
        if not batch:
            return
        self.sent["api_messages"] += len(batch)
        self.sent[f"raw_batches_{key}"] += 1
        body = json.dumps({"batch": batch, "sentAt": _now_iso()}).encode()
        try:
            status, _, text = self._request("POST", "/v1/batch", self.batch_headers[key], body)
        except (OSError, ValueError) as exc:
            self._fail(f"batch of {len(batch)}: {exc!r}")
            return
        if status != 200:
            self._answer(status, f"batch of {len(batch)}: {status} {text[:200]!r}")

    def send_library(self, msg: dict[str, Any]) -> None:
        """Hand a message to segment-analytics-python (waiting while its queue is full)."""
        self.sent["api_messages"] += 1
        self.sent["library_messages"] += 1
        who = {"user_id": msg.get("userId"), "anonymous_id": msg.get("anonymousId")}
        common = {**who, "context": dict(msg["context"]), "message_id": msg["messageId"]}
        while True:
            if msg["type"] == "identify":
                ok, _ = self.library.identify(traits=msg["traits"], **common)
            elif msg["type"] == "page":
                ok, _ = self.library.page(name=msg["name"], properties=msg["properties"], **common)
            else:
                ok, _ = self.library.track(
                    event=msg["event"], properties=msg["properties"], **common
                )
            if ok:
                return
            time.sleep(0.01)  # the queue is full: it was not sent, so it is no replay

    # answers

    def _request(
        self, method: str, target: str, headers: bytes, body: bytes = b""
    ) -> tuple[int, str, bytes]:
        self.requests += 1
        if self.requests % RECONNECT_EVERY == 0:  # as browsers come and go: both web
            self.conn.close()  # processes get connections, whichever accepted them first
            self.conn = Connection(self.url)
        try:
            status, found, data = self.conn.request(method, target, headers, body)
        except (OSError, ValueError):
            self.conn.close()
            self.conn = Connection(self.url)
            raise
        self.sent[f"status_{status}"] += 1
        self.set_cookie = found.get(b"set-cookie", b"").decode()
        return status, found.get(b"content-type", b"").decode(), data

    def _answer(self, status: int, what: str) -> None:
        self._fail(what)
        if status >= 500:
            self.sent["answers_5xx"] += 1

    def _fail(self, what: str) -> None:
        with self.lock:  # the library's consumer thread reports its failures too
            self.sent["failed"] += 1
            if len(self.failures) < 20:
                self.failures.append(what)


def _basic_auth(key: str) -> bytes:
    token = base64.b64encode(f"{key}:".encode()).decode()
    return f"Authorization: Basic {token}\r\nContent-Type: application/json\r\n".encode()


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def run_lane(plan: Plan, lane: int, url: str, keys: dict[str, str]) -> dict[str, Any]:
    """Run one client's share of the plan (in a process of its own) with the site's
    ``public`` and ``server`` keys; return its counters."""
    return Lane(plan, lane, url, keys).run()


# --- the checks ----------------------------------------------------------------------------


def wait_drained(server: Server, seconds: float) -> dict[str, Any]:
    """Return `dmp status --json` once the stream is empty and nothing is spooled (twice in
    a row, with the counts standing still); raise after ``seconds`` without progress."""
    last, since, progress = None, time.monotonic(), None
    while True:
        state = server.status()
        now = (state["pending"], state["spooled_bytes"], state["events_stored"])
        if now == last and now[:2] == (0, 0):
            return state
        if now != last:
            last, since = now, time.monotonic()
            progress = state
        if time.monotonic() - since > seconds:
            raise RuntimeError(f"the worker did not drain: {progress}")
        time.sleep(1.0)


def observe(server: Server) -> dict[str, Any]:
    """Return what dmp holds after the soak: status, metrics, event log, aggregate hashes."""
    state = wait_drained(server, 300)
    time.sleep(2.5)  # the collectors' counters reach Redis about once a second
    metrics = server.metrics()
    rows, ids, sources = 0, 0, {}
    files = sorted((server.data_dir / "events").rglob("*.parquet"))
    if files:
        log = pl.scan_parquet(files).select("event_id", "source")
        rows, ids = log.select(pl.len(), pl.col("event_id").n_unique()).collect().row(0)
        sources = dict(log.group_by("source").len().collect().iter_rows())
    server_sock = redisserver.locate_server(server.data_dir).socket
    r = redis.Redis(unix_socket_path=str(server_sock), decode_responses=True)
    aggregate = 0
    partitions = [keyspace.LEGACY, *ingest_partitions(r)]
    patterns = [keys.aggregate("*", "*") for keys in partitions]
    for key in (k for pattern in patterns for k in r.scan_iter(pattern)):
        fields = r.hmget(key, "hits", "bots")
        aggregate += sum(int(v or 0) for v in fields)
    r.close()
    log_text = server.log_path.read_text()
    return {
        "status": state,
        "metrics": metrics,
        "log_rows": rows,
        "log_ids": ids,
        "log_by_source": sources,
        "aggregate_hashes": aggregate,
        "up": server.proc.poll() is None and server.healthy(),
        "tracebacks": log_text.count("Traceback"),
        # Each start of a web process or of the ingest worker is logged: more than the first
        # ones means one died under the soak.
        "starts": log_text.count("Booting worker") + log_text.count("ingest worker started"),
    }


def _hits(metrics: dict[str, float], collector: str, outcome: str) -> int:
    name = f'dmp_hits_total{{collector="{collector}",outcome="{outcome}"}}'
    return int(metrics.get(name, 0))


def check(sent: Counter[str], seen: dict[str, Any]) -> list[Row]:
    """Return every check of the soak: what was sent against what dmp holds."""
    state, metrics = seen["status"], seen["metrics"]
    stored = sent["pixel_stored"] + sent["api_stored"]
    aggregate = sent["pixel_aggregate"] + sent["api_aggregate"]
    replays = sent["pixel_replays"] + sent["raw_replays"] + sent["library_replays"]
    not_ok = sum(
        v for k, v in metrics.items() if k.startswith("dmp_hits_total{") and 'outcome="ok"' not in k
    )
    return [
        Row(
            "stored + aggregate = distinct sent",
            stored + aggregate,
            state["events_stored"] + state["events_aggregate"],
        ),  # fmt: skip
        Row("events stored (consented)", stored, state["events_stored"]),
        Row("events in aggregate (unconsented)", aggregate, state["events_aggregate"]),
        Row(
            "duplicates = replays sent", replays, int(metrics.get("dmp_events_duplicate_total", 0))
        ),  # fmt: skip
        Row("event log rows", stored, seen["log_rows"]),
        Row("event log distinct event ids", stored, seen["log_ids"]),
        Row(
            "event log rows from the pixel",
            sent["pixel_stored"],
            seen["log_by_source"].get("pixel", 0),
        ),  # fmt: skip
        Row(
            "event log rows from the API", sent["api_stored"], seen["log_by_source"].get("api", 0)
        ),  # fmt: skip
        Row("aggregate hashes (hits + bots)", aggregate, seen["aggregate_hashes"]),
        Row("pixel requests counted ok", sent["pixel_requests"], _hits(metrics, "pixel", "ok")),
        Row("API messages counted ok", sent["api_messages"], _hits(metrics, "api", "ok")),
        Row("hits counted not ok", 0, not_ok),
        Row("answers 5xx", 0, sent["answers_5xx"]),
        Row("requests failed", 0, sent["failed"]),
        Row("stream pending", 0, state["pending"]),
        Row("spooled bytes", 0, state["spooled_bytes"]),
        Row("server up (/healthz 200)", 1, int(seen["up"])),
        Row("tracebacks in serve's log", 0, seen["tracebacks"]),
        Row("process starts (web and worker)", WEB_PROCESSES + 1, seen["starts"]),
    ]


# --- the soak ------------------------------------------------------------------------------


def run_soak(plan: Plan, work: Path) -> dict[str, Any]:
    """Run a soak in ``work`` (a fresh folder); return its report (``ok`` says whether every
    check held)."""
    server = Server(work)
    try:
        started = time.perf_counter()
        sent, failures = send(plan, server)
        sending = time.perf_counter() - started
        seen = observe(server)
        total = time.perf_counter() - started
    finally:
        server.stop()
    rows = check(sent, seen)
    requests = sent["pixel_requests"] + sent["api_messages"]
    return {
        "plan": asdict(plan),
        "ok": all(row.ok for row in rows),
        "rows": [{**asdict(row), "ok": row.ok} for row in rows],
        "sent": dict(sent),
        "failures": failures[:20],
        "sending_s": round(sending, 2),
        "elapsed_s": round(total, 2),
        "drain_s": round(total - sending, 2),
        "events_per_s": round(requests / sending, 1),
        "pixel_per_s": round(sent["pixel_requests"] / sending, 1),
        "api_per_s": round(sent["api_messages"] / sending, 1),
        "persons": seen["status"]["persons"],
    }


def send(plan: Plan, server: Server) -> tuple[Counter[str], list[str]]:
    """Run the plan's client processes against the server; return their summed counters."""
    sent: Counter[str] = Counter()
    failures: list[str] = []
    keys = {"public": server.write_key, "server": server.server_key}
    with ProcessPoolExecutor(plan.clients, mp_context=get_context("spawn")) as pool:
        futures = [
            pool.submit(run_lane, plan, lane, server.url, keys) for lane in range(plan.clients)
        ]
        for future in futures:
            result = future.result()
            sent.update(result["sent"])
            failures.extend(result["failures"])
    return sent, failures


def print_report(report: dict[str, Any]) -> None:
    """Print a soak's throughput, times and table of checks."""
    plan, sent = report["plan"], report["sent"]
    print(
        f"soak: {plan['pixel']:,} pixel hits + {plan['api']:,} Segment events "
        f"(+{sent.get('pixel_replays', 0):,} and "
        f"+{sent.get('raw_replays', 0) + sent.get('library_replays', 0):,} replays), "
        f"{plan['clients']} client processes, {sent.get('library_messages', 0):,} messages "
        f"through segment-analytics-python (server key), raw batches: "
        f"{sent.get('raw_batches_server', 0):,} with the server key, "
        f"{sent.get('raw_batches_public', 0):,} with the public write key"
    )
    print(
        f"sent in {report['sending_s']:,.1f} s: {report['events_per_s']:,.0f} events/s "
        f"({report['pixel_per_s']:,.0f} pixel hits/s, {report['api_per_s']:,.0f} API events/s); "
        f"drained {report['drain_s']:,.1f} s later; elapsed {report['elapsed_s']:,.1f} s"
    )
    width = max(len(row["name"]) for row in report["rows"])
    print(f"\n{'check':<{width}}  {'expected':>12}  {'observed':>12}")
    for row in report["rows"]:
        mark = "" if row["ok"] else "  MISMATCH"
        print(f"{row['name']:<{width}}  {row['expected']:>12,}  {row['observed']:>12,}{mark}")
    for failure in report["failures"]:
        print(f"failed: {failure}")
    print("\nall checks hold" if report["ok"] else "\nMISMATCH: see above")


def main() -> int:
    """Run the soak from the command line; return the exit code (1 on any mismatch)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pixel", type=int, default=1_000_000, help="distinct pixel hits")
    parser.add_argument("--api", type=int, default=1_000_000, help="distinct Segment events")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--replays", type=float, default=0.05, help="share sent again")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--work-dir", type=Path, help="a folder for serve's data dir and log (kept)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-save", action="store_true", help="do not append to bench/results")
    args = parser.parse_args()
    plan = Plan(args.pixel, args.api, args.clients, args.replays, seed=args.seed)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="dmp-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        report = run_soak(plan, work)
    finally:
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    if not args.no_save:
        from runlog import append, commit  # bench/ is the script's folder

        append("soak", {"at": _now_iso(), "commit": commit(), **report})
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
