"""Fault: the events folder goes read-only or fills up under the ingest worker.

The worker runs as ``dmp serve`` runs it (``fleet.run_forever`` on a thread) against the real
embedded Redis; the folder is a small tmpfs (as root), else a read-only directory.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from dmp.ingest import stream
from dmp.ingest.eventlog import scan_events
from dmp.ingest.fleet import run_forever
from dmp.ingest.worker import status
from dmp.storage import keyspace, metrics
from tests.factories import make_hit, read_metric, scrape, send_hits
from tests.served import mount, wait_for

EVENTS = 10_000


class Fault:
    """Makes a folder unwritable (``begin``) and writable again (``end``)."""

    def __init__(self, begin: Callable[[], None], end: Callable[[], None], reason: str):
        self.begin, self.end, self.reason = begin, end, reason


@pytest.fixture
def events_dir(config) -> Iterator[Path]:
    """Return the test's events folder: a 2 MB tmpfs as root (unmounted after), else a dir."""
    path = config.events_dir
    path.mkdir(parents=True)
    mounted = os.geteuid() == 0 and mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path))
    yield path
    if mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _read_only(path: Path) -> Fault:
    if os.geteuid() != 0:  # chmod does not stop root
        return Fault(lambda: path.chmod(0o555), lambda: path.chmod(0o755), "Permission denied")
    if not os.path.ismount(path):  # root, but no mounts here: a file where the day's folder goes
        day = path / "dt=2026-09-21"  # the day of every test hit
        return Fault(lambda: day.write_bytes(b""), lambda: day.unlink(), "File exists")
    return Fault(
        lambda: mount("-o", "remount,ro", str(path)) or pytest.fail("remount ro failed"),
        lambda: mount("-o", "remount,rw", str(path)) or pytest.fail("remount rw failed"),
        "Read-only file system",
    )


def _full(path: Path) -> Fault:
    if not os.path.ismount(path):
        pytest.skip("a full disk needs a small tmpfs (run as root)")
    filler = path / "filler"

    def fill() -> None:
        with open(filler, "wb") as fh:
            with contextlib.suppress(OSError):  # until the disk is full: that is the fault
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()

    return Fault(fill, lambda: filler.unlink(), "No space left on device")


def _metric(client, name: str) -> float:
    """Return an unlabelled sample of /metrics (0 while a counter was never counted)."""
    return read_metric(scrape(client), name) or 0.0


@pytest.mark.parametrize("make_fault", [_read_only, _full], ids=["read-only", "full"])
def test_ingest_resumes_by_itself_once_the_events_folder_is_writable(
    redis, config, client, events_dir, make_fault, caplog
):
    """10,000 events while the events folder refuses writes: the failure is logged at once
    (one line for the whole streak), /healthz says degraded and /metrics shows it, nothing
    is acked; once the folder takes writes again, every event is stored exactly once
    without a restart, one line says so, and /healthz is ok again."""
    fault = make_fault(events_dir)
    cfg = replace(config, flush_seconds=0.2, segments_every=0)
    send_hits(redis, *(make_hit(uid=f"c{i % 200}") for i in range(EVENTS)))
    fault.begin()
    stop = threading.Event()
    worker = threading.Thread(target=run_forever, args=(redis, cfg, stop), daemon=True)
    caplog.set_level(logging.INFO, logger="dmp")
    worker.start()
    try:
        wait_for(lambda: redis.exists(keyspace.EVENTLOG_FLUSH), 20, "the flush failure state")
        health = client.get("/healthz")
        assert health.status_code == 200
        body = health.get_json()
        assert body["status"] == "degraded" and fault.reason in body["ingest"]["flush_error"]
        assert body["ingest"]["since"] <= time.time()
        assert _metric(client, "dmp_eventlog_flush_failing") == 1
        # Retries go on (0.5 s, 1 s, ...) without a line each.
        wait_for(
            lambda: _metric(client, "dmp_eventlog_flush_failures_total") >= 3,
            20,
            "three failed attempts",
        )
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1 and fault.reason in warnings[0].getMessage()
        assert status(redis)["pending"] == EVENTS and status(redis)["events_stored"] == 0
        written = [p for p in events_dir.rglob("*.parquet*") if p.is_file()]
        assert not written, written
        fault.end()
        wait_for(lambda: status(redis)["pending"] == 0, 30, "ingest to resume")
    finally:
        stop.set()
        worker.join(30)
    log = scan_events(events_dir).collect()
    assert log.height == EVENTS and log["event_id"].n_unique() == EVENTS
    assert status(redis)["events_stored"] == EVENTS
    assert metrics.read_counter(redis, "dmp_events_duplicate_total") == 0
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert _metric(client, "dmp_eventlog_flush_failing") == 0
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING or "again" in r.message]
    assert len(lines) == 2 and "available again" in lines[1].getMessage()
    assert not list(events_dir.rglob(".*.tmp"))


def test_a_worker_stopped_while_the_folder_fails_leaves_every_event_pending(
    redis, config, drain, events_dir
):
    """SIGTERM (its stop event) during a failing flush stops the worker within a second or
    two, with nothing acked, no file or intent left and the lease given up; the next worker
    stores every event once when the folder is writable again."""
    fault = _read_only(events_dir)
    cfg = replace(config, flush_seconds=0.2, segments_every=0)
    send_hits(redis, *(make_hit(uid=f"c{i % 50}") for i in range(1000)))
    fault.begin()
    stop = threading.Event()
    worker = threading.Thread(target=run_forever, args=(redis, cfg, stop), daemon=True)
    worker.start()
    try:
        wait_for(lambda: redis.exists(keyspace.EVENTLOG_FLUSH), 20, "the flush failure state")
        time.sleep(1.0)
        stopped = time.monotonic()
        stop.set()
        worker.join(10)
        assert not worker.is_alive() and time.monotonic() - stopped < 3
    finally:
        stop.set()
        fault.end()
    assert status(redis)["pending"] == 1000 and status(redis)["events_stored"] == 0
    assert redis.get(keyspace.partition(0).lease) is None and not redis.smembers(
        keyspace.partition(0).intents
    )
    assert drain() == 1000
    log = scan_events(events_dir).collect()
    assert log.height == 1000 and log["event_id"].n_unique() == 1000
    assert not redis.exists(keyspace.EVENTLOG_FLUSH)  # cleared by the flush that worked


def test_a_recovery_the_folder_refuses_is_retried_not_fatal(redis, config, events_dir, caplog):
    """A worker starting while the folder is read-only, with an interrupted flush to undo
    (one of its two files in place), logs it once and retries; once the folder is writable
    the flush is undone and its events stored once."""
    if os.geteuid() == 0 and not os.path.ismount(events_dir):
        pytest.skip("root needs a read-only mount to refuse an unlink")
    fault = _read_only(events_dir)
    send_hits(redis, *(make_hit(uid=f"c{i}") for i in range(20)))
    stream.ensure_group(redis)
    ids = [
        sid
        for sid, _ in redis.xreadgroup(
            keyspace.GROUP, config.consumer, {keyspace.partition(0).stream: ">"}
        )[0][1]
    ]
    kept = events_dir / "dt=2026-09-21" / "part-x.parquet"
    kept.parent.mkdir()
    kept.write_bytes(b"PAR1")
    files = [str(kept), str(events_dir / "dt=2026-09-22" / "part-x.parquet")]
    redis.set(keyspace.partition(0).intent("x"), json.dumps({"files": files, "ids": ids}))
    redis.sadd(keyspace.partition(0).intents, "x")
    fault.begin()
    stop = threading.Event()
    cfg = replace(config, flush_seconds=0.2, segments_every=0)
    worker = threading.Thread(target=run_forever, args=(redis, cfg, stop), daemon=True)
    caplog.set_level(logging.INFO, logger="dmp")
    worker.start()
    try:
        wait_for(lambda: redis.exists(keyspace.EVENTLOG_FLUSH), 10, "the failure state")
        time.sleep(1.5)
        assert worker.is_alive()
        fault.end()
        wait_for(lambda: status(redis)["pending"] == 0, 10, "ingest to resume")
    finally:
        stop.set()
        worker.join(10)
    assert not kept.exists()
    log = scan_events(events_dir).collect()
    assert log.height == 20 and log["event_id"].n_unique() == 20
    assert (
        len(
            [
                r
                for r in caplog.records
                if r.levelno >= logging.WARNING and "unavailable" in r.message
            ]
        )
        == 1
    )


def test_a_worker_whose_lease_passes_on_during_a_failing_flush_stores_nothing_twice(
    redis, config, events_dir, caplog
):
    """While the folder fails, another worker takes the lease: the retrying flush is given
    up (nothing acked, no file left), and when the lease and folder come back every event
    is stored once by the same, still running, worker."""
    fault = _read_only(events_dir)
    cfg = replace(config, flush_seconds=0.2, segments_every=0, lease_seconds=1.5)
    send_hits(redis, *(make_hit(uid=f"c{i % 50}") for i in range(500)))
    fault.begin()
    stop = threading.Event()
    worker = threading.Thread(target=run_forever, args=(redis, cfg, stop), daemon=True)
    worker.start()
    try:
        wait_for(lambda: redis.exists(keyspace.EVENTLOG_FLUSH), 20, "the flush failure state")
        caplog.set_level(logging.INFO, logger="dmp")
        redis.set(keyspace.partition(0).lease, "another-worker", px=60_000)
        wait_for(lambda: "lost the worker lease" in caplog.text, 20, "the lease loss noticed")
        # The other worker's time (its lease lasts 60 s, far past these pauses): nothing of
        # ours is stored meanwhile, the folder failing or not. A slow machine only makes
        # these checks weaker, never wrong.
        time.sleep(1.0)
        assert status(redis)["pending"] == 500 and worker.is_alive()
        fault.end()
        time.sleep(2.0)  # a worker ignoring the lease would flush (0.2 s) well within this
        assert status(redis)["events_stored"] == 0  # not while the other holds the lease
        assert status(redis)["pending"] == 500 and worker.is_alive()
        redis.delete(keyspace.partition(0).lease)
        wait_for(lambda: status(redis)["pending"] == 0, 30, "ingest to resume")
    finally:
        stop.set()
        worker.join(10)
    log = scan_events(events_dir).collect()
    assert log.height == 500 and log["event_id"].n_unique() == 500
    assert metrics.read_counter(redis, "dmp_events_duplicate_total") == 0


def test_a_flush_is_retried_as_soon_as_the_folder_takes_writes_again(redis, tmp_path):
    """After backing off to seconds between attempts, the retry comes within about half a
    second of the folder taking writes again (a probe file), not at the end of the pause."""
    from dmp.ingest.flushstate import FlushState

    folder, attempts = tmp_path / "events", []

    def attempt() -> str:
        attempts.append(time.monotonic())
        if not folder.exists():
            raise OSError(28, "No space left on device")
        return "stored"

    fixed_at: list[float] = []

    def fix() -> None:
        # Once the 4th attempt failed, the pause before the 5th is 4 s (0.5, 1, 2, 4 s).
        deadline = time.monotonic() + 60
        while len(attempts) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        folder.mkdir()
        fixed_at.append(time.monotonic())

    fixer = threading.Thread(target=fix)
    fixer.start()
    state = FlushState(redis, logging.getLogger("test.flush"))
    assert state.retry(attempt, folder, lambda: False) == "stored"
    fixer.join()
    # The attempt that worked is the first after the fix, and came within the probe's
    # half second (with room for a loaded machine), not after the 4 s pause.
    assert len(attempts) == 5 and attempts[-2] < fixed_at[0] < attempts[-1]
    assert attempts[-1] - fixed_at[0] < 2.0
    assert not redis.exists(keyspace.EVENTLOG_FLUSH)
    assert metrics.read_counter(redis, "dmp_eventlog_flush_failures_total") == 4


def test_a_folder_that_takes_a_probe_but_not_the_flush_gets_plain_backoff(redis, tmp_path):
    """A nearly full disk takes the small probe file but not the flush: after one early
    retry the attempts back off (not one every half second), and a halt raises the error."""
    from dmp.ingest.flushstate import FlushState

    attempts: list[float] = []

    def attempt() -> None:
        attempts.append(time.monotonic())
        raise OSError(28, "No space left on device")

    state = FlushState(redis, logging.getLogger("test.flush"))
    with pytest.raises(OSError, match="No space"):
        state.retry(attempt, tmp_path, lambda: len(attempts) >= 4)
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    # At most two early (probe-woken) retries; the 4th attempt waited out its 2 s pause.
    assert len(attempts) == 4 and gaps[-1] >= 1.5, gaps
    assert redis.hget(keyspace.EVENTLOG_FLUSH, "failures") == str(len(attempts))
