"""The collectors' spool: hits that Redis could not take wait in a local file, in order.

While Redis is away (killed, restarting, hung, refusing writes) a collector process
appends each hit's stream JSON as one line to its own append-only file under
``DMP_DATA_DIR/spool/``, fsynced in small groups, and answers the browser as usual. A
replay thread hands the lines to the stream in order once Redis answers again
(:mod:`dmp.ingest.replay`), then deletes the file. Replayed hits keep their event ids, so a hit
that reached Redis after all (its answer was lost with the connection) is dropped by the
worker's dedup: every spooled hit is stored exactly once.

Each process holds an ``flock`` on its own file for as long as it has one. A file whose
lock is free belongs to a process that died: any other process adopts it (replays and
deletes it).
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import threading
import time
from pathlib import Path

import redis

from dmp.ingest import replay
from dmp.storage import lifetime, metrics
from dmp.storage.outage import Outage

log = logging.getLogger(__name__)

FSYNC_SECONDS = 0.1  # the replay thread fsyncs what was appended this often
PAUSE = 0.5  # seconds between looks for Redis (and for other processes' orphans)


def spool_dir(data_dir: Path) -> Path:
    """Return the folder holding every process's spool file."""
    return data_dir / "spool"


def spooled_bytes(data_dir: Path) -> int:
    """Return how many bytes of hits wait in the spool files of ``data_dir`` (not replayed)."""
    total = 0
    for path in spool_dir(data_dir).glob(f"*{replay.SUFFIX}"):
        try:
            total += max(0, path.stat().st_size - replay.done_offset(path))
        except OSError:
            continue  # replayed and deleted while we looked
    return total


class Spool:
    """One process's spool file and the thread that replays it (and adopts orphans)."""

    def __init__(
        self, directory: Path, redis_client: redis.Redis, max_bytes: int, partitions: int = 1
    ) -> None:
        self.directory = directory
        self._r = redis_client
        self.partitions = partitions  # DMP_STREAM_PARTITIONS: replayed hits to theirs
        self.max_bytes = max_bytes
        self.outage = Outage(log, "Redis (collector spool)")
        self._disk = Outage(log, "the spool folder (hits are lost)")
        self._reset()
        lifetime.register(self)

    def after_fork(self) -> None:
        """Start afresh in a forked child: the parent's file, its lock and thread stay his."""
        if self._fd is not None:
            os.close(self._fd)
        self._reset()

    def _reset(self) -> None:
        """Set the state a new object starts with."""
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0  # bytes in our file, replayed ones included
        self._unsynced = 0
        self._torn = False  # a failed write may have left half a line: start a new one
        self._active = False  # hits go to the file (not to Redis) until it is replayed
        self._thread: threading.Thread | None = None  # the replay thread, while it runs
        self._stop = threading.Event()
        self._dropped = 0  # hits lost (spool full or failing) not yet counted in Redis
        self._done: dict[Path, int] = {}  # how far each file is replayed (also on disk)
        self._full_logged = False

    @property
    def active(self) -> bool:
        """Return whether hits must go to the spool (it holds lines not yet replayed)."""
        return self._active

    def append(self, lines: list[str], *, share: float = 1.0) -> bool:
        """Append hits' stream JSON lines (all or none); return False if they are lost
        (the spool is full, or its folder refuses them: logged and counted).

        With ``share`` < 1 the lines are taken only while the file is below that share of
        its size (hits whose write key is unchecked: junk keys must not crowd real hits
        out during an outage).
        """
        if not lines:
            return True
        data = "".join(line + "\n" for line in lines).encode()
        with self._lock:
            taken = self._take(data, len(lines), int(self.max_bytes * share))
        self._start_thread()  # it replays, or reports what was lost once Redis is back
        return taken

    def _take(self, data: bytes, count: int, limit: int) -> bool:
        """Write ``count`` lines to our file (fsynced by the replay thread); the caller
        holds the lock."""
        if self._size + len(data) > limit:
            self._lose(count)
            return False
        try:
            self._write(data)
        except OSError as exc:
            self._disk.down(exc)
            self._dropped += count
            return False
        self._disk.up()
        self._unsynced += count
        self._active = True
        return True

    def adopt_orphans(self) -> None:
        """Start replaying files that processes which died left behind, if there are any."""
        if self._others():
            self._start_thread()

    def close(self) -> None:
        """Stop the replay thread; fsync what waits and leave it to an adopter."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
            if thread.is_alive():  # still replaying: keep the file locked until exit
                lifetime.unregister(self)
                return
        with self._lock:
            try:
                self._sync()
            except OSError:
                pass
            if self._fd is not None and not self._active:
                self._forget_own()  # nothing waits in it
            elif self._fd is not None:  # unlocked: another process adopts what waits
                os.close(self._fd)
                self._fd, self._path, self._size, self._active = None, None, 0, False
        lifetime.unregister(self)

    # -- the file ---------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        """Write ``data`` whole at the end of our file; on failure take back any part."""
        fd = self._open()
        if self._torn:
            data = b"\n" + data  # the line a failed write cut off ends here, unreadable
        written = 0
        try:
            while written < len(data):
                written += os.write(fd, data[written:])
        except OSError:
            if written:
                try:
                    os.ftruncate(fd, self._size)
                except OSError:
                    self._size += written
                    self._torn = True
            raise
        self._size += len(data)
        self._torn = False

    def _open(self) -> int:
        if self._fd is not None:
            return self._fd
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{os.getpid()}-{secrets.token_hex(4)}{replay.SUFFIX}"
        # Made under a name adopters do not look at, locked, then named: an adopter never
        # sees it unlocked (it would take it for an orphan and delete it under us).
        new = path.with_suffix(".new")
        fd = os.open(new, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(new, path)
        except OSError:
            os.close(fd)
            new.unlink(missing_ok=True)
            raise
        self._fd, self._path, self._size, self._unsynced = fd, path, 0, 0
        return fd

    def _sync(self) -> None:
        """fsync our file (the caller holds the lock)."""
        if self._fd is not None and self._unsynced:
            os.fsync(self._fd)
            self._unsynced = 0

    def _sync_unlocked(self) -> None:
        """fsync our file without holding the lock meanwhile: appends go on."""
        with self._lock:
            if self._fd is None or not self._unsynced:
                return
            fd, count = os.dup(self._fd), self._unsynced
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        with self._lock:
            self._unsynced = max(0, self._unsynced - count)

    def _forget_own(self) -> None:
        """Delete our replayed file (before unlocking it: no one adopts it meanwhile)."""
        assert self._path is not None and self._fd is not None
        replay.forget(self._path)
        os.close(self._fd)
        self._fd, self._path, self._size, self._active = None, None, 0, False

    def _others(self) -> list[Path]:
        """Return the spool files of other processes (living, or dead: orphans)."""
        return [p for p in sorted(self.directory.glob(f"*{replay.SUFFIX}")) if p != self._path]

    def _lose(self, count: int) -> None:
        self._dropped += count
        if not self._full_logged:
            self._full_logged = True
            log.error(
                "spool %s is full (%d bytes, DMP_SPOOL_MAX_BYTES): hits are lost until "
                "Redis is back",
                self._path,
                self._size,
            )

    # -- the replay thread ------------------------------------------------------------

    def _start_thread(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="dmp-spool", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        failing = Outage(log, "the spool's replay")
        next_try = 0.0
        while not self._stop.wait(FSYNC_SECONDS):
            try:
                self._sync_unlocked()
                if time.monotonic() < next_try:
                    continue
                next_try = time.monotonic() + PAUSE
                try:
                    self._r.ping()
                    self.replay()
                except redis.RedisError as exc:
                    self.outage.down(exc)
                    continue
                self.outage.up()
                failing.up()
            except Exception as exc:  # a bug or a failing disk must not end replays
                if failing.down(exc):
                    log.exception("spool replay failed; retried every %g s", PAUSE)
                continue
            with self._lock:  # decided under the lock that appends take: no hit is left
                if not self._active and not self._others():
                    self._thread = None  # the next spooled hit starts a new thread
                    return
        with self._lock:
            self._thread = None

    def replay(self) -> int:
        """Hand every spooled line to the stream (orphans', then ours); return how many.

        Raises redis errors (the caller tries again later); what was replayed stays done.
        """
        count = sum(
            replay.replay_orphan(self._r, path, self._done, self.partitions)
            for path in self._others()
        )
        if self._active:
            count += self._replay_own()
        with self._lock:
            dropped, self._dropped = self._dropped, 0
            self._full_logged = False
        if dropped:
            try:
                metrics.incr(self._r, replay.DROPPED, dropped)
            except redis.RedisError:
                with self._lock:
                    self._dropped += dropped
                raise
        return count

    def _replay_own(self) -> int:
        count = 0
        while True:
            self._sync_unlocked()
            with self._lock:
                path, end = self._path, self._size
                assert path is not None
                offset = max(self._done.get(path, 0), replay.done_offset(path))
                if offset >= end:  # all replayed: delete the file, go direct again
                    self._forget_own()
                    self._done.pop(path, None)
                    return count
            count += replay.replay_range(self._r, path, offset, end, self._done, self.partitions)
