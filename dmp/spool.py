"""The collectors' spool: hits that Redis could not take wait in a local file, in order.

While Redis is away (killed, restarting, refusing writes) a collector process appends
each hit's stream JSON as one line to its own append-only file under
``DMP_DATA_DIR/spool/``, fsynced in small groups, and answers the browser as usual. A
replay thread hands the lines to the stream in order once Redis answers again, then
empties the file. Replayed hits keep their event ids, so a hit that reached Redis after
all (its answer was lost with the connection) is dropped by the worker's dedup: every
spooled hit is stored exactly once.

Each process holds an ``flock`` on its own file for its whole life. A file whose lock
is free belongs to a process that died: any other process adopts it (replays and
deletes it). How far a replay got is kept beside the file (``.done``), so an adopter
starts there instead of at the top.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from dmp import keyspace, metrics
from dmp.bulk import Bulk
from dmp.outage import Outage
from dmp.records import dump_json
from dmp.stream import FIELD

log = logging.getLogger(__name__)

SUFFIX = ".spool"
DONE = ".done"
UNRESOLVED = "?"  # a site id starting with this is a write-key hash to resolve on replay
FSYNC_EVERY = 64  # appended lines that make the appender fsync at once
FSYNC_SECONDS = 0.1  # ... else the replay thread fsyncs what waits this often
REPLAY_CHUNK = 1000  # lines per round trip on replay
PAUSE = 0.5  # seconds between looks for Redis (and for other processes' orphans)
_REPLAYED = metrics.counter("dmp_spool_replayed_total")
_DROPPED = metrics.counter("dmp_spool_dropped_total")
_UNKNOWN = metrics.counter("dmp_hits_total", collector="pixel", outcome="unknown_key")


def spool_dir(data_dir: Path) -> Path:
    """Return the folder holding every process's spool file."""
    return data_dir / "spool"


def spooled_bytes(data_dir: Path) -> int:
    """Return how many bytes of hits wait in the spool files of ``data_dir`` (not replayed)."""
    total = 0
    for path in spool_dir(data_dir).glob(f"*{SUFFIX}"):
        try:
            total += max(0, path.stat().st_size - _done_offset(path))
        except OSError:
            continue  # replayed and deleted while we looked
    return total


def _done_offset(path: Path) -> int:
    try:
        return int(path.with_suffix(DONE).read_text() or 0)
    except (OSError, ValueError):
        return 0


class Spool:
    """One process's spool file and the thread that replays it (and adopts orphans)."""

    def __init__(self, directory: Path, redis_client: redis.Redis, max_bytes: int) -> None:
        self.directory = directory
        self._r = redis_client
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._pid = 0
        self._size = 0  # bytes in our file, replayed ones included
        self._unsynced = 0
        self._active = False  # hits go to the file (not to Redis) until it is replayed
        self._thread: threading.Thread | None = None  # the replay thread, while it runs
        self._thread_pid = 0  # the process that started it (a fork has no threads)
        self._dropped = 0  # hits refused because the file was full (not yet counted in Redis)
        self._full_logged = False
        self._next_try = 0.0  # monotonic time of the next look for Redis
        self.outage = Outage(log, "Redis (collector spool)")

    @property
    def active(self) -> bool:
        """Return whether hits must go to the spool (it holds lines not yet replayed)."""
        return self._active

    def append(self, lines: list[str]) -> bool:
        """Append hits' stream JSON lines (all or none); return False if the spool is full."""
        if not lines:
            return True
        data = "".join(line + "\n" for line in lines).encode()
        with self._lock:
            fd = self._open()
            if self._size + len(data) > self.max_bytes:
                self._dropped += len(lines)
                if not self._full_logged:
                    self._full_logged = True
                    log.error(
                        "spool %s is full (%d bytes, DMP_SPOOL_MAX_BYTES): further hits are "
                        "lost until Redis is back",
                        self._path,
                        self._size,
                    )
                return False
            os.write(fd, data)  # O_APPEND: one write per call, lines never interleave
            self._size += len(data)
            self._unsynced += len(lines)
            self._active = True
            if self._unsynced >= FSYNC_EVERY:
                self._sync()
        self._start_thread()
        return True

    def adopt_orphans(self) -> None:
        """Start replaying files that processes which died left behind, if there are any."""
        if any(self._orphans()):
            self._start_thread()

    # -- the file ---------------------------------------------------------------------

    def _open(self) -> int:
        if self._fd is not None and self._pid == os.getpid():
            return self._fd
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # new name: nobody else holds it
        self._fd, self._path, self._pid, self._size, self._unsynced = fd, path, os.getpid(), 0, 0
        return fd

    def _sync(self) -> None:
        if self._fd is not None and self._unsynced:
            os.fsync(self._fd)
            self._unsynced = 0

    def _orphans(self) -> Iterator[Path]:
        own = self._path if self._pid == os.getpid() else None
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if path != own:
                yield path

    # -- the replay thread ------------------------------------------------------------

    def _start_thread(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread_pid == os.getpid():
                return  # running, and it looks at the spool once more before it ends
            self._thread_pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="dmp-spool", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(FSYNC_SECONDS)
            with self._lock:
                self._sync()
            if time.monotonic() < self._next_try:
                continue
            self._next_try = time.monotonic() + PAUSE
            try:
                self._r.ping()
                self.replay()
            except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError, OSError) as e:
                self.outage.down(e)
                continue
            self.outage.up()
            with self._lock:  # decided under the lock that appends take: no hit is left
                if not self._active and not any(self._orphans()):
                    self._thread = None  # the next spooled hit starts a new thread
                    return

    def replay(self) -> int:
        """Hand every spooled line to the stream (ours, then orphans'); return how many.

        Raises redis errors (the caller tries again later); what was replayed stays done.
        """
        count = 0
        for path in list(self._orphans()):
            count += self._replay_orphan(path)
        if self._active:
            count += self._replay_own()
        if self._dropped:
            with self._lock:
                dropped, self._dropped = self._dropped, 0
                self._full_logged = False
            try:
                metrics.incr(self._r, _DROPPED, dropped)
            except redis.RedisError:
                with self._lock:
                    self._dropped += dropped
                raise
        return count

    def _replay_own(self) -> int:
        path = self._path
        assert path is not None
        count, offset = 0, _done_offset(path)
        while True:
            with self._lock:
                self._sync()
                end = self._size
                if offset >= end:  # all replayed: empty the file and go direct again
                    os.ftruncate(self._fd, 0)  # type: ignore[arg-type]
                    path.with_suffix(DONE).unlink(missing_ok=True)
                    self._size, self._active = 0, False
                    return count
            count += _replay_range(self._r, path, offset, end)
            offset = end

    def _replay_orphan(self, path: Path) -> int:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return 0  # another process adopted it first
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # its process lives (or another adopter is at it)
            if not path.exists():
                return 0  # replayed and deleted between our open and our lock
            end = os.fstat(fd).st_size
            offset = _done_offset(path)
            count = _replay_range(self._r, path, offset, end) if offset < end else 0
            path.unlink()
            path.with_suffix(DONE).unlink(missing_ok=True)
            log.info("replayed %d hits spooled by a process that ended (%s)", count, path.name)
            return count
        finally:
            os.close(fd)


def _replay_range(r: redis.Redis, path: Path, offset: int, end: int) -> int:
    """XADD the lines of ``path`` between two byte offsets, in order; return how many."""
    count = 0
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(end - offset)
    lines = data.split(b"\n")
    if lines and lines[-1]:
        log.warning(
            "a spooled line was cut off (its process died mid-write): %d bytes", len(lines[-1])
        )
    lines = [line for line in lines[:-1] if line]
    done = offset
    for start in range(0, len(lines), REPLAY_CHUNK):
        chunk = lines[start : start + REPLAY_CHUNK]
        resolved, unknown = _resolve_sites(r, chunk)
        bulk = Bulk()
        for line in resolved:
            bulk.add("XADD", keyspace.STREAM, "*", FIELD, line)
        bulk.add("HINCRBY", keyspace.METRICS, _REPLAYED, len(resolved))
        if unknown:
            bulk.add("HINCRBY", keyspace.METRICS, _UNKNOWN, unknown)
        bulk.execute(r)
        count += len(resolved)
        done += sum(len(line) + 1 for line in chunk)
        path.with_suffix(DONE).write_text(str(done))
    if count:
        log.info("replayed %d spooled hits into the stream", count)
    return count


def _resolve_sites(r: redis.Redis, lines: list[bytes]) -> tuple[list[bytes], int]:
    """Return the lines with write-key hashes turned into site ids, and how many had none.

    The pixel spools hits whose write key it could not check (Redis was away and the key
    not in its cache) with the key's hash where the site id goes.
    """
    marker = b'"' + UNRESOLVED.encode()
    pending = [(i, json.loads(line)) for i, line in enumerate(lines) if marker in line]
    pending = [
        (i, h)
        for i, h in pending
        if isinstance(h, list) and isinstance(h[1], str) and h[1].startswith(UNRESOLVED)
    ]
    if not pending:
        return lines, 0
    sites = r.mget([keyspace.write_key(h[1][len(UNRESOLVED) :]) for _, h in pending])
    out, unknown = list(lines), 0
    drop: set[int] = set()
    for (i, hit), site_id in zip(pending, sites, strict=True):
        if not site_id:
            drop.add(i)
            unknown += 1
            continue
        hit[1] = site_id.decode() if isinstance(site_id, bytes) else site_id
        out[i] = dump_json(hit).encode()
    return [line for i, line in enumerate(out) if i not in drop], unknown
