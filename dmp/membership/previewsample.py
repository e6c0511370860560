"""A fixed sample of each matrix build, for previews and plans estimated in milliseconds.

A preview or a plan over a whole matrix of a million persons takes seconds; over a
sample of about ``TARGET`` persons it takes tens of milliseconds. The sample is fixed
per build: the persons whose id hashes below a threshold (about ``TARGET`` of them),
their matrix rows and their touchpoints (merges applied, as the build read them, for
``did`` conditions). A matrix of at most ``EXACT_BELOW`` persons has no sample: its
previews are exact at once.

The sample is written beside its snapshot the first time it is asked for
(``<snapshot>.sample.parquet`` and ``<snapshot>.sample-touchpoints.parquet``, pruned
with it by :mod:`dmp.matrix.snapshots`), under a file lock so that two processes do not
write it twice, each file written whole or not at all (:mod:`dmp.storage.parquetfiles`).
A process keeps the samples it read in memory; :func:`ready_sample` reads (or writes)
one on a thread so that no page waits for it.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import redis

from dmp.config import Config
from dmp.matrix import builds, snapshots
from dmp.storage.parquetfiles import write_parquet_files

log = logging.getLogger(__name__)

EXACT_BELOW = 100_000  # persons: a matrix this small is previewed whole, exactly, at once
TARGET = 50_000  # persons in the sample of a larger matrix (about)
HASH_RANGE = 1 << 32  # a person is in the sample if the low bits of its id's hash are below
KEEP = 2  # samples kept in memory per process (the latest build's, and the one before)
_LOCK = threading.Lock()
_KEPT: OrderedDict[str, Sample] = OrderedDict()  # snapshot name -> sample
_READING: dict[str, threading.Thread] = {}  # snapshot name -> the thread reading its sample


@dataclass(frozen=True, slots=True)
class Sample:
    """A build's sample: its persons' matrix rows and touchpoints, out of ``persons``."""

    build: str
    as_of: int
    persons: int
    rows: pl.DataFrame
    touchpoints: pl.DataFrame
    stamp: tuple[int, ...] = ()  # its files' mtimes when read: rewritten (erasures) if changed

    @property
    def size(self) -> int:
        """Return how many persons the sample holds."""
        return self.rows.height

    @property
    def fraction(self) -> float:
        """Return the share of all persons the sample holds."""
        return self.size / self.persons if self.persons else 1.0


def sample_paths(snapshot: Path) -> tuple[Path, Path]:
    """Return where a snapshot's sample rows and sample touchpoints are kept."""
    return snapshot.with_suffix(".sample.parquet"), snapshot.with_suffix(
        ".sample-touchpoints.parquet"
    )


def lock_path(snapshot: Path) -> Path:
    """Return the file locked while a snapshot's sample is written."""
    return snapshot.with_suffix(".sample.lock")


def matrix_persons(snapshot: Path) -> int:
    """Return how many persons a snapshot holds (from the Parquet footer: cheap)."""
    return _persons(str(snapshot), snapshot.stat().st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _persons(path: str, mtime_ns: int) -> int:
    return pl.scan_parquet(path).select(pl.len()).collect().item()


def _stamp(snapshot: Path) -> tuple[int, ...]:
    """The sample files' mtimes (a compaction rewrites them to erase persons)."""
    try:
        return tuple(p.stat().st_mtime_ns for p in sample_paths(snapshot))
    except FileNotFoundError:
        return ()


def is_small(snapshot: Path) -> bool:
    """Return whether a snapshot is small enough to be previewed whole (no sample)."""
    return matrix_persons(snapshot) <= EXACT_BELOW


def threshold(persons: int, target: int | None = None) -> int:
    """Return the hash threshold that takes about ``target`` of ``persons`` persons."""
    wanted = TARGET if target is None else target
    return HASH_RANGE if persons <= wanted else max(1, HASH_RANGE * wanted // persons)


def in_sample(limit: int) -> pl.Expr:
    """Return whether a row's person is in the sample taken with this threshold."""
    return pl.col("person_id").hash(seed=0) % HASH_RANGE < limit


def write_sample(r: redis.Redis, config: Config, snapshot: Path, manifest: dict) -> bool:
    """Write a snapshot's sample unless it is there; return whether this call wrote it.

    A file lock makes a second writer (thread or process) wait and then find it written.
    """
    rows_path, touch_path = sample_paths(snapshot)
    with _locked(lock_path(snapshot)):
        if rows_path.exists() and touch_path.exists():
            return False
        limit = threshold(matrix_persons(snapshot))
        rows = pl.scan_parquet(snapshot).filter(in_sample(limit)).collect(engine="streaming")
        touchpoints = builds.build_touchpoints(r, config, manifest)
        mine = touchpoints.join(rows.lazy().select("person_id"), on="person_id", how="semi")
        found = mine.collect(engine="streaming")
        # The touchpoints first: the rows file is what says "written" to a reader.
        write_parquet_files([found.to_arrow()], [touch_path])
        write_parquet_files([rows.to_arrow()], [rows_path], snapshots.ROW_GROUP_ROWS)
        log.info(
            "preview sample of %s: %d persons, %d touchpoints",
            snapshot.name,
            rows.height,
            found.height,
        )
        return True


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (released when the process dies, too)."""
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def load_sample(r: redis.Redis, config: Config, snapshot: Path, manifest: dict) -> Sample:
    """Return a snapshot's sample: kept in memory, else read (written first if missing)."""
    kept = _kept(snapshot)
    if kept is not None:
        return kept
    write_sample(r, config, snapshot, manifest)
    rows_path, touch_path = sample_paths(snapshot)
    stamp = _stamp(snapshot)
    found = Sample(
        snapshot.name,
        manifest["as_of"],
        matrix_persons(snapshot),
        pl.read_parquet(rows_path),
        pl.read_parquet(touch_path),
        stamp,
    )
    with _LOCK:
        _KEPT[snapshot.name] = found
        while len(_KEPT) > KEEP:
            _KEPT.popitem(last=False)
    return found


def ready_sample(r: redis.Redis, config: Config, snapshot: Path, manifest: dict) -> Sample | None:
    """Return a snapshot's sample if this process holds it; else start reading (or
    writing) it on a thread and return None."""
    kept = _kept(snapshot)
    if kept is not None:
        return kept
    with _LOCK:
        if snapshot.name not in _READING:
            _READING[snapshot.name] = threading.Thread(
                target=_read_later, args=(r, config, snapshot, manifest), daemon=True
            )
            _READING[snapshot.name].start()
    return None


def _kept(snapshot: Path) -> Sample | None:
    """The sample kept in memory, unless its files were rewritten since (then dropped)."""
    with _LOCK:
        found = _KEPT.get(snapshot.name)
    if found is None or found.stamp == _stamp(snapshot):
        return found
    with _LOCK:
        _KEPT.pop(snapshot.name, None)
    return None


def _read_later(r: redis.Redis, config: Config, snapshot: Path, manifest: dict) -> None:
    try:
        load_sample(r, config, snapshot, manifest)
    except Exception:  # a snapshot pruned meanwhile, Redis away: the next look tries again
        log.exception("preview sample: reading the sample of %s failed", snapshot.name)
    finally:
        with _LOCK:
            _READING.pop(snapshot.name, None)


def wait_for_samples(timeout: float | None = None) -> None:
    """Wait for the samples being read on threads (tests, and a process about to exit)."""
    with _LOCK:
        threads = list(_READING.values())
    for thread in threads:
        thread.join(timeout)


def forget_samples() -> None:
    """Drop the samples this process keeps in memory (tests)."""
    with _LOCK:
        _KEPT.clear()
