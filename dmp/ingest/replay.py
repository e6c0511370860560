"""Replay of spool files into the stream: in order, in chunks, how far it got kept beside.

A spool file holds one hit per line, in the stream's JSON (:meth:`Hit.to_json`). Replay
hands the lines between two byte offsets to the stream, :data:`CHUNK` lines a round trip,
and after each chunk writes how far it got to ``<file>.done``, so that whoever replays the
file next (its process, or an adopter after that process died) starts there. A hit
replayed twice all the same (a crash between a chunk and its ``.done``) keeps its event
id and is dropped by the worker's dedup.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import redis

from dmp.ingest.stream import partition_of_json, xadd_args
from dmp.records import Hit
from dmp.storage import keyspace, metrics, recenthits
from dmp.storage.bulk import Bulk

log = logging.getLogger(__name__)

SUFFIX = ".spool"
DONE = ".done"
UNRESOLVED = "?"  # a site id starting with this is a write-key hash to resolve on replay
CHUNK = 1000  # lines per round trip
REPLAYED = metrics.counter("dmp_spool_replayed_total")
DROPPED = metrics.counter("dmp_spool_dropped_total")
UNKNOWN_KEY = metrics.hits_counter("pixel", "unknown_key")
PIXEL_OK = metrics.hits_counter("pixel", "ok")
UNKNOWN_KEY_RECENT = recenthits.recent_field("pixel", "unknown_key")


def done_offset(path: Path) -> int:
    """Return how many bytes of a spool file are replayed (0 if none are)."""
    try:
        return int(path.with_suffix(DONE).read_text() or 0)
    except (OSError, ValueError):
        return 0


def mark_done(path: Path, offset: int) -> None:
    """Record that a spool file is replayed up to ``offset`` (a rename: never half)."""
    tmp = path.with_suffix(DONE + ".tmp")
    tmp.write_text(str(offset))
    os.replace(tmp, path.with_suffix(DONE))


def forget(path: Path) -> None:
    """Delete a spool file and what is kept beside it."""
    for p in (path, path.with_suffix(DONE), path.with_suffix(DONE + ".tmp")):
        p.unlink(missing_ok=True)


def replay_range(
    r: redis.Redis,
    path: Path,
    offset: int,
    end: int,
    done: dict[Path, int],
    partitions: int = 1,
) -> int:
    """XADD the lines of ``path`` between two byte offsets, in order; return how many.

    How far it got goes into ``done`` (the caller's memory) and beside the file (for an
    adopter); a folder that refuses the latter does not make it send anything twice.
    Lines that are no hit (cut off by a process's death, garbled by a failing disk) are
    dropped and counted in ``dmp_spool_dropped_total``. Raises redis errors: what was
    replayed before stays done.
    """
    count = 0
    for chunk, upto in _chunks(path, offset, end):
        readable, unreadable = _readable(chunk)
        lines, unknown, resolved = _resolve_sites(r, readable)
        bulk = Bulk()
        for line in lines:  # each to its partition, as the collector would have put it
            bulk.add(*xadd_args(line, partition_of_json(line, partitions)))
        bulk.add("HINCRBY", keyspace.METRICS, REPLAYED, len(lines))
        if unknown:
            bulk.add("HINCRBY", keyspace.METRICS, UNKNOWN_KEY, unknown)
            # Refused at the replay, not at the door: `dmp status` shows it all the same.
            recenthits.queue_counts(bulk.add, {UNKNOWN_KEY_RECENT: unknown})
        if resolved:  # the pixel counts a hit with an unchecked key only once it is known
            bulk.add("HINCRBY", keyspace.METRICS, PIXEL_OK, resolved)
        if unreadable:
            bulk.add("HINCRBY", keyspace.METRICS, DROPPED, unreadable)
            log.warning("dropped %d unreadable lines of spool %s", unreadable, path.name)
        bulk.execute(r)
        count += len(lines)
        done[path] = upto
        try:
            mark_done(path, upto)
        except OSError as exc:
            log.warning("cannot record how far spool %s is replayed: %s", path.name, exc)
    if count:
        log.info("replayed %d spooled hits into the stream", count)
    return count


def replay_orphan(r: redis.Redis, path: Path, done: dict[Path, int], partitions: int = 1) -> int:
    """Replay and delete the spool file of a process that died; return how many hits.

    Nothing happens while the file's process lives (it holds an flock on it) or while
    another process adopts it.
    """
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
        offset = max(done.get(path, 0), done_offset(path))
        count = replay_range(r, path, offset, end, done, partitions) if offset < end else 0
        forget(path)
        done.pop(path, None)
        if count:
            log.info("replayed %d hits a process that ended had spooled (%s)", count, path.name)
        return count
    finally:
        os.close(fd)


def _chunks(path: Path, offset: int, end: int) -> Iterator[tuple[list[bytes], int]]:
    """Yield chunks of whole lines between the offsets, each with the offset after it."""
    with open(path, "rb") as f:
        f.seek(offset)
        position = offset
        while position < end:
            chunk: list[bytes] = []
            while len(chunk) < CHUNK and position < end:
                line = f.readline(end - position)
                if not line:
                    break
                position += len(line)
                chunk.append(line)
            yield chunk, position
            if not chunk:
                return


def _readable(lines: list[bytes]) -> tuple[list[tuple[bytes, Hit]], int]:
    """Return the lines that are whole, storable hits (without their newline) with their
    hits, and how many are not."""
    out, bad = [], 0
    for line in lines:
        text = line.rstrip(b"\n")
        if not text:
            continue  # an empty line (spools write one after a failed write): nothing
        try:
            hit = Hit.from_json(text)
        except (TypeError, ValueError):
            hit = None
        if hit is not None and hit.storable():  # else the worker would drop it as well
            out.append((text, hit))
        else:
            bad += 1
    return out, bad


def _resolve_sites(
    r: redis.Redis, readable: list[tuple[bytes, Hit]]
) -> tuple[list[bytes], int, int]:
    """Return the lines with write-key hashes turned into site ids, how many had no site
    and how many got one.

    The pixel spools hits whose write key it could not check (Redis was away and the key
    not in its cache) with the key's hash where the site id goes.
    """
    lines = [text for text, _ in readable]
    pending = [(i, hit) for i, (_, hit) in enumerate(readable) if hit.site_id[:1] == UNRESOLVED]
    if not pending:
        return lines, 0, 0
    keys = [keyspace.write_key(hit.site_id[len(UNRESOLVED) :]) for _, hit in pending]
    out: list[bytes | None] = list(lines)
    unknown = 0
    for (i, hit), site_id in zip(pending, r.mget(keys), strict=True):
        if not site_id:
            out[i], unknown = None, unknown + 1
            continue
        site = site_id.decode() if isinstance(site_id, bytes) else site_id
        out[i] = hit._replace(site_id=site).to_json().encode()
    return [line for line in out if line is not None], unknown, len(pending) - unknown
