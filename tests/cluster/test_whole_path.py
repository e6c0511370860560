"""Issue 17's whole path on a real three-master Redis Cluster: collect → ingest → matrix →
segments → lookup, with four stream partitions, two collectors and two workers."""

from __future__ import annotations

import itertools
import json
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest
import requests

from dmp.ingest.stream import partition_of
from dmp.people.identity import IdKind
from dmp.storage import metrics
from tests.factories import bearer, make_hit, person_of
from tests.served import free_port, healthy, run_in, serve_env, stop_process, wait_for

PARTITIONS = 4
PERSONS = 6
SEGMENTS = "id: visitors\nname: Visitors\nwhere: {did: {event: page, within_days: 30}}\n"
CONSENT = {"categoryPreferences": {"Analytics": True, "Advertising": True}}


@dataclass
class Installation:
    """Two `dmp serve --no-worker` and two `dmp worker` processes on one cluster."""

    env: dict[str, str]
    data_dir: Path
    urls: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)

    def dmp(self, *args: str) -> str:
        """Run a `dmp` command against the cluster; return its output (it must succeed)."""
        return run_in(self.env, *args)

    def status(self) -> dict:
        """Return `dmp status --json`."""
        return json.loads(self.dmp("status", "--json"))

    def start(self, *args: str) -> subprocess.Popen:
        """Start a long-running `dmp` process, its output to a log beside the data."""
        log = open(self.data_dir.parent / f"{args[0]}-{len(self.procs)}.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "dmp", *args], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        """Return every process's log (for a failure's message)."""
        return "\n".join(
            f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.data_dir.parent.glob("*.log")
        )


@pytest.fixture
def installation(cluster, redis_cluster, tmp_path) -> Iterator[Installation]:
    """Return two collectors and two workers running on the flushed cluster, all on one
    data dir, DMP_STREAM_PARTITIONS=4."""
    data_dir = tmp_path / "data"
    env = serve_env(data_dir)
    env["DMP_REDIS_URL"] = redis_cluster.url
    env["DMP_STREAM_PARTITIONS"] = str(PARTITIONS)
    found = Installation(env, data_dir)
    data_dir.mkdir()
    try:
        for _ in range(2):
            port = free_port()
            found.start("serve", "--no-worker", "--port", str(port), "--workers", "1")
            found.urls.append(f"http://127.0.0.1:{port}")
        for _ in range(2):
            found.start("worker")
        for url in found.urls:
            if not wait_for_quietly(lambda u=url: healthy(u), 60):
                pytest.fail(f"dmp serve did not start:\n{found.logs()}")
        yield found
    finally:
        for proc in found.procs:
            stop_process(proc)


def wait_for_quietly(check: Callable[[], object], seconds: float) -> bool:
    """Return whether ``check`` came true within ``seconds`` (polled)."""
    try:
        wait_for(check, seconds, "")
    except pytest.fail.Exception:
        return False
    return True


def _other_partition_user(uid: str) -> str:
    """Return a Segment userId whose hits go to another partition than cookie ``uid``'s."""
    cookie = partition_of(make_hit(uid=uid), PARTITIONS)
    for k in itertools.count():
        user = f"user-{uid[:8]}-{k}"
        if partition_of(make_hit(uid="", anonymous_id="", user_id=user), PARTITIONS) != cookie:
            return user
    raise AssertionError("unreachable")


def _visit(
    inst: Installation, i: int, site_key: str, server_key: str, expected: set[str]
) -> tuple[str, str, str]:
    """One person's traffic, spread over both collectors, with replays; return (uid, user,
    email). Every event id sent is added to ``expected``."""
    a, b = inst.urls[i % 2], inst.urls[(i + 1) % 2]
    browser = requests.Session()
    pixel = {"k": site_key, "consent": "analytics,ads", "topics": "crm"}
    ids = [f"px{i}-{n}-{secrets.token_hex(4)}" for n in range(2)]
    for url, event_id, page in ((a, ids[0], "pricing"), (b, ids[1], "produkte"), (b, ids[0], "")):
        # (the third is the first again: a browser's retry, on the other collector)
        got = browser.get(
            f"{url}/p.gif",
            params={**pixel, "id": event_id, "url": f"https://acme.de/{page or 'pricing'}"},
        )
        assert got.status_code == 200 and got.headers["Content-Type"] == "image/gif"
    expected.update(ids)
    uid = browser.cookies["dmp_uid"]
    user, email = _other_partition_user(uid), f"person{i}@acme.de"
    batch = {
        "batch": [
            {"type": "identify", "messageId": f"id-{user}", "userId": user,
             "traits": {"email": email}, "context": {"consent": CONSENT}},
            {"type": "track", "messageId": f"tr-{user}", "userId": user,
             "event": "Demo Requested", "context": {"consent": CONSENT}},
        ]
    }  # fmt: skip
    for url in (b, a):  # the server's retry goes to the other collector
        got = requests.post(f"{url}/v1/batch", auth=(server_key, ""), json=batch, timeout=30)
        assert got.status_code == 200, got.text
    expected.update(m["messageId"] for m in batch["batch"])
    beacon = {
        "k": site_key,
        "consent": ["analytics", "ads"],
        "events": [{"type": "identify", "id": f"link-{uid}", "traits": {"email": email}}],
    }
    for url in (a, b):
        got = browser.post(f"{url}/collect", data=json.dumps(beacon), timeout=30)
        assert got.status_code == 204, got.text
    expected.add(f"link-{uid}")
    return uid, user, email


def test_the_whole_path_on_a_cluster(installation, cluster, tmp_path):
    """Pixel, tag and Segment API hits (with replays) through two collectors and two
    workers on four partitions of a three-master cluster: every event stored exactly once,
    every identity split over two partitions merged into one person, the matrix built, the
    segments run, and the lookup API answering a person's segments."""
    inst = installation
    site_key = inst.dmp("sites", "add", "Acme GmbH", "--domain", "acme.de").split()[-1]
    server_key = inst.dmp(
        "keys", "create", "--scope", "server", "--site", "acme-gmbh", "--name", "backend"
    ).split()[-1]
    expected: set[str] = set()
    people = [_visit(inst, i, site_key, server_key, expected) for i in range(PERSONS)]

    def drained() -> dict | None:
        state = inst.status()
        done = state["pending"] == 0 and state["events_stored"] >= len(expected)
        return state if done else None

    if not wait_for_quietly(drained, 180):
        pytest.fail(f"not drained: {inst.status()}\n{inst.logs()}")
    events = pl.read_parquet(inst.data_dir / "events" / "*" / "*.parquet")
    assert events.height == len(expected), inst.logs()
    assert set(events["event_id"]) == expected and events["event_id"].n_unique() == len(expected)
    # Every replay reached a worker and was dropped as a copy: per person one pixel hit,
    # the two messages of the Segment batch and the tag's beacon.
    assert metrics.read_counter(cluster, "dmp_events_duplicate_total") == 4 * PERSONS
    for uid, user, email in people:
        assert partition_of(make_hit(uid=uid), PARTITIONS) != partition_of(
            make_hit(uid="", anonymous_id="", user_id=user), PARTITIONS
        )
        person = person_of(cluster, IdKind.UID, uid)
        assert person["person_id"] == person_of(cluster, IdKind.EMAIL, email)["person_id"]
        assert person["person_id"] == person_of(cluster, IdKind.USER, user)["person_id"]
        assert {"uid", "email", "user"} <= set(person["identifiers"])
    assert inst.status()["persons"]["medium"] == PERSONS

    path = tmp_path / "segments.yaml"
    path.write_text(SEGMENTS)
    inst.dmp("segments", "apply", str(path))
    inst.dmp("matrix", "build")
    run = json.loads(inst.dmp("segments", "run", "--json"))
    assert run["members"]["visitors"] == PERSONS
    partner = inst.dmp(
        "keys", "create", "--scope", "partner", "--audiences", "visitors", "--name", "DSP"
    ).split()[-1]
    for n, (uid, _, _) in enumerate(people):
        got = requests.get(
            f"{inst.urls[n % 2]}/api/v1/lookup", params={"uid": uid}, headers=bearer(partner)
        )
        assert got.status_code == 200, got.text
        segments = [s["id"] for d in got.json()["data"] for s in d["segment"]]
        assert segments == ["visitors"], got.json()
