"""Compaction: the event log's small per-flush files merged into a few files per day,
the rows of pending erasures dropped from every Parquet file, and retention applied.

One compaction at a time holds ``keyspace.COMPACTION_LOCK``. In order, it

1. finishes the swaps an interrupted compaction left (:mod:`dmp.ingest.swaps`);
2. forgets expired cookie-only persons in Redis (:mod:`dmp.ingest.retention`); their
   ids join the pending erasures;
3. reads the pending erasures once (:mod:`dmp.ingest.erasures`): exactly these members
   leave ``keyspace.ERASURE_PENDING`` at the end; those added meanwhile stay;
4. lists the event log, then the uncommitted flush intents: a file an intent names may
   yet be undone by the worker's recovery, so it is never touched (a flush's files
   appear by rename, after its intent, so reading the intents second misses none);
5. packs each day's files, in name order, into groups of about ``compact_target_mb``
   and writes each group of several files, or with rows to drop, to one new file under
   a temporary name, a row group at a time. Nothing visible changes yet: flushes,
   builds and runs go on;
6. under the lock that matrix builds and segment runs share (``keyspace.SEGMENTS_LOCK``,
   as ``dmp.membership.runs.run_lock``) and the lookup sets' lock (live ticks), swaps the
   new files in for their inputs (journaled), removes the day partitions past
   ``retain_events_days``, and rewrites every other Parquet file under the data dir that
   holds an erased row (matrix snapshots, states and histories; segment members, counts
   and changes), each under its own name;
7. looks at the event files it did not read (flushed since it listed the log, or then
   uncommitted): a member with rows there stays pending for the next compaction.

**Why builds stay right.** Merged files have new names and their inputs vanish. An
incremental matrix build whose last manifest names a vanished file builds in full
(``dmp.matrix.builds``), and a segment run then recounts everyone (``runs._can_keep``):
rows that moved are neither counted twice nor missed, and rows that were dropped
(erasure, retention) leave every person's state. The price is one full build a day
(seconds at 100k persons), rather than an old-to-new file mapping that every reader of
a manifest (builds, runs, plans, previews, the live lane) would have to follow. Holding
the run lock for the swap keeps every build and run off the log while files move.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import redis

from dmp.config import Config
from dmp.ingest import erasures as pending
from dmp.ingest import retention, stream, swaps
from dmp.ingest.erasures import Erasures
from dmp.records import EVENT_SCHEMA
from dmp.storage import keyspace, locks
from dmp.storage.outage import Outage
from dmp.storage.parquetfiles import tmp_name

log = logging.getLogger(__name__)

BUSY = "another compaction is in progress"
ROW_GROUP = 1 << 17  # rows per row group of a merged file
RUN_LOCK_WAIT = 600.0  # seconds to wait for a build or run to end before the swap
SETS_LOCK_WAIT = 60.0


@dataclass(frozen=True, slots=True)
class CompactionReport:
    """What a compaction did."""

    files_before: int  # event-log files
    files_after: int
    bytes_before: int  # event-log bytes
    bytes_after: int
    rows_erased: int  # rows dropped for pending erasures, in every file
    rows_retired: int  # rows of day partitions past retention
    days_removed: int
    persons_expired: int  # cookie-only persons forgotten in Redis
    files_rewritten: int  # other Parquet files rewritten without erased rows
    erasures_handled: int  # pending members removed
    erasures_left: int  # pending members kept (rows in files not yet read)
    recovered: int  # swaps of an interrupted compaction finished
    seconds: float


@dataclass(slots=True)
class Group:
    """Event files of one day folder, written as one file."""

    inputs: list[Path]
    output: Path
    rows_in: int = 0
    rows_out: int = 0

    def swap(self) -> swaps.Swap:
        """Return the swap that puts the written file in place of the inputs."""
        return swaps.Swap(tuple(self.inputs), self.output if self.rows_out else None)


@dataclass(slots=True)
class Listing:
    """The event log as a compaction found it."""

    days: dict[str, list[Path]]  # day folder name -> its files, sorted
    skipped: list[Path] = field(default_factory=list)  # named by an uncommitted intent

    def files(self) -> list[Path]:
        """Return every listed file (skipped ones too)."""
        return [p for files in self.days.values() for p in files] + self.skipped


class Stopped(RuntimeError):
    """The compaction was asked to stop before its swap: nothing visible changed."""


def compact(
    r: redis.Redis,
    config: Config,
    *,
    now_ms: int | None = None,
    target_bytes: int | None = None,
    wait_seconds: float = 0.0,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> CompactionReport:
    """Compact the event log into files of about ``target_bytes`` (``compact_target_mb``),
    drop pending erasures from every file and apply retention as of ``now_ms``; locks.Busy
    if another compaction runs past ``wait_seconds``, Stopped if ``stop`` is set before
    the swap."""
    started = time.perf_counter()
    now = int(time.time() * 1000) if now_ms is None else now_ms
    tick = progress or (lambda n: None)
    events = config.events_dir
    with locks.hold(r, keyspace.COMPACTION_LOCK, wait_seconds, BUSY) as lease:
        recovered = _recover(r, events) if swaps.journal_path(events).exists() else 0
        swaps.remove_orphans(events)
        expired = retention.expire_anonymous(r, config.retain_anonymous_days, now)
        drop = pending.read_pending(r)
        listing = list_events(r, events)
        before = _sizes(listing.files())
        retired = retention.old_days(sorted(listing.days), config.retain_events_days, now)
        gone = [p for day in retired for p in listing.days.pop(day)]
        rows_retired = sum(_rows(p) for p in gone)
        target = target_bytes or config.compact_target_mb << 20
        groups = _plan(listing, drop, target, tick)
        erased = _write_all(groups, drop, tick, stop)
        if lease.lost.is_set():
            _discard(groups)
            raise locks.Busy("the compaction lock was lost (this compaction stalled)")
        try:
            with _log_locks(r):
                swaps.swap(events, [g.swap() for g in groups])
                swaps.remove_files(events, gone)
                others = _other_files(config) if drop else []
                rewritten, erased_elsewhere = pending.erase_files(others, drop, tick)
        except BaseException:
            if not swaps.journal_path(events).exists():  # else the next one rolls forward
                _discard(groups)
            raise
        read = {p for ps in listing.days.values() for p in ps} | {g.output for g in groups}
        after = list_events(r, events)
        unread = [p for p in after.files() if p not in read]
        left = pending.members_left(unread, drop) if drop else set()
        pending.remove_handled(r, drop.members - left)
        after_sizes = _sizes(after.files())
    report = CompactionReport(
        files_before=len(before),
        files_after=len(after_sizes),
        bytes_before=sum(before.values()),
        bytes_after=sum(after_sizes.values()),
        rows_erased=erased + erased_elsewhere,
        rows_retired=rows_retired,
        days_removed=len(retired),
        persons_expired=len(expired),
        files_rewritten=rewritten,
        erasures_handled=len(drop.members - left),
        erasures_left=len(left),
        recovered=recovered,
        seconds=time.perf_counter() - started,
    )
    finished = int(time.time() * 1000)  # the schedule counts from here
    r.set(keyspace.COMPACTION_LAST, json.dumps({"at": finished, **asdict(report)}))
    log.info("compaction: %s", describe(report))
    return report


def describe(report: CompactionReport) -> str:
    """Return a one-line account of a compaction."""
    return (
        f"{report.files_before:,} event files ({report.bytes_before / 1e6:,.1f} MB) -> "
        f"{report.files_after:,} ({report.bytes_after / 1e6:,.1f} MB); "
        f"{report.rows_erased:,} rows erased, {report.files_rewritten} other files rewritten; "
        f"{report.days_removed} days ({report.rows_retired:,} rows) past retention; "
        f"{report.persons_expired:,} cookie-only persons expired; "
        f"{report.erasures_handled} erasures done, {report.erasures_left} left; "
        f"{report.seconds:.1f} s"
    )


@contextmanager
def _log_locks(r: redis.Redis) -> Iterator[None]:
    """Hold what keeps builds, runs and live ticks off the log while files move: the run
    lock (as dmp.membership.runs.run_lock), then the lookup sets' lock (in runs' order)."""
    with (
        locks.hold(r, keyspace.SEGMENTS_LOCK, RUN_LOCK_WAIT, "a matrix build or run is long"),
        locks.hold(r, keyspace.SEGMENTS_SETS_LOCK, SETS_LOCK_WAIT, "the lookup sets move"),
    ):
        yield


# -- the event log as listed ----------------------------------------------------------


def list_events(r: redis.Redis, events_dir: Path) -> Listing:
    """Return the event log's files by day, those of uncommitted flushes apart."""
    found = sorted(events_dir.glob("dt=*/part-*.parquet"))
    # Read after the listing: a listed file's intent was written before it appeared.
    open_files = _uncommitted(r)
    listing = Listing({})
    for path in found:
        if f"{path.parent.name}/{path.name}" in open_files:
            listing.skipped.append(path)
        else:
            listing.days.setdefault(path.parent.name, []).append(path)
    return listing


def _uncommitted(r: redis.Redis) -> set[str]:
    """Return ``dt=…/part-….parquet`` of every file an uncommitted flush intent names
    (in any partition's intents)."""
    payloads = []
    for keys in stream.used_partitions(r):
        names = sorted(r.smembers(keys.intents))
        payloads += [r.get(keys.intent(n)) for n in names]  # one by one: slots differ
    out: set[str] = set()
    for raw in payloads:
        for text in json.loads(raw)["files"] if raw else ():
            path = Path(text)
            out.add(f"{path.parent.name}/{path.name}")
    return out


def _sizes(paths: list[Path]) -> dict[Path, int]:
    out = {}
    for path in paths:
        try:
            out[path] = path.stat().st_size
        except FileNotFoundError:  # an uncommitted flush undone meanwhile
            pass
    return out


def _rows(path: Path) -> int:
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except FileNotFoundError:
        return 0


# -- planning and writing -------------------------------------------------------------


def _plan(
    listing: Listing, drop: Erasures, target: int, tick: Callable[[int], None]
) -> list[Group]:
    """Return the groups worth writing: each day's files packed, in name order, into
    groups of about ``target`` bytes (files of one schema); a group of one file only if
    it has rows to drop."""
    dirty = _files_with_drops(listing, drop) if drop else set()
    groups: list[Group] = []
    for files in listing.days.values():
        bins: list[list[Path]] = []
        size, schema = 0, None
        for path in files:
            this, bytes_ = pq.read_schema(path), path.stat().st_size
            if not bins or size + bytes_ > target or not this.equals(schema):
                bins.append([])
                size, schema = 0, this
            bins[-1].append(path)
            size += bytes_
        groups += [
            Group(inputs, swaps.output_name(inputs[0].parent))
            for inputs in bins
            if len(inputs) > 1 or inputs[0] in dirty
        ]
    tick(len(listing.files()) - sum(len(g.inputs) for g in groups))  # nothing to do there
    return groups


def _files_with_drops(listing: Listing, drop: Erasures) -> set[Path]:
    """Return the listed files holding a row that a pending erasure names (one scan)."""
    files = [p for ps in listing.days.values() for p in ps]
    if not files:
        return set()
    named = pl.lit(False)
    for column in drop.columns():
        if column in EVENT_SCHEMA.names:  # (not person_key: the log keeps the ids)
            named = named | pl.col(column).is_in(sorted(drop.values[column])).fill_null(False)
    found = (
        pl.scan_parquet(
            [str(p) for p in files],
            hive_partitioning=False,
            include_file_paths="file",
            missing_columns="insert",
            extra_columns="ignore",
        )
        .filter(named)
        .select(pl.col("file").unique())
        .collect()
    )
    return {Path(p) for p in found["file"]}


def _write_all(
    groups: list[Group], drop: Erasures, tick: Callable[[int], None], stop: threading.Event | None
) -> int:
    """Write every group; return the rows dropped. Stopped (the files written so far
    removed) once ``stop`` is set."""
    dropped = 0
    for group in groups:
        if stop is not None and stop.is_set():
            _discard(groups)
            raise Stopped("compaction stopped before its swap; nothing changed")
        dropped += _write(group, drop, tick)
    return dropped


def _write(group: Group, drop: Erasures, tick: Callable[[int], None]) -> int:
    """Write a group's rows, less the erased ones, to its output's temporary name and
    fsync it; return how many rows were dropped."""
    dropped, writer, batches = 0, None, []
    with open(tmp_name(group.output), "wb") as fh:
        for path in group.inputs:
            source = pq.ParquetFile(path)
            if writer is None:  # the group's files share one schema (see _plan)
                writer = pq.ParquetWriter(fh, source.schema_arrow, compression="zstd")
            for batch in source.iter_batches(batch_size=ROW_GROUP):
                group.rows_in += batch.num_rows
                mask = pending.drop_mask(batch, drop)
                if n := pending.count_dropped(mask):
                    dropped += n
                    batch = batch.filter(pc.invert(mask))
                batches.append(batch)
                if sum(b.num_rows for b in batches) >= ROW_GROUP:
                    group.rows_out += _flush(writer, batches)
            tick(1)
        if writer is not None:
            group.rows_out += _flush(writer, batches)
            writer.close()
        fh.flush()
        os.fsync(fh.fileno())
    if not group.rows_out:  # every row erased: the inputs just go
        tmp_name(group.output).unlink()
    return dropped


def _flush(writer: pq.ParquetWriter, batches: list[pa.RecordBatch]) -> int:
    """Write the waiting batches as one row group; return its rows."""
    rows = sum(b.num_rows for b in batches)
    if rows:
        writer.write_table(pa.Table.from_batches(batches))
    batches.clear()
    return rows


def _discard(groups: list[Group]) -> None:
    for group in groups:
        tmp_name(group.output).unlink(missing_ok=True)


def _other_files(config: Config) -> list[Path]:
    """Return every Parquet file under the data dir but the event log's."""
    return sorted(
        p
        for p in config.data_dir.rglob("*.parquet")
        if not p.is_relative_to(config.events_dir) and not p.name.startswith(".")
    )


def _recover(r: redis.Redis, events_dir: Path) -> int:
    """Finish an interrupted compaction's swaps (the compaction lock held)."""
    with _log_locks(r):
        return swaps.roll_forward(events_dir)


# -- the worker's schedule ------------------------------------------------------------

_AWAY = (redis.ConnectionError, redis.TimeoutError)


def run_schedule(r: redis.Redis, config: Config, stop: threading.Event) -> None:
    """Compact every ``compact_every_hours`` (counted from the last compaction, kept in
    Redis) until ``stop`` is set; finish a swap a dead compaction left at once."""
    every = config.compact_every_hours * 3600
    pause = min(60.0, max(0.05, every / 24))
    outage, failed = Outage(log, "Redis (compaction)"), float("-inf")
    while not stop.wait(pause):
        try:
            if swaps.journal_path(config.events_dir).exists():
                with locks.hold(r, keyspace.COMPACTION_LOCK, 0, BUSY):
                    _recover(r, config.events_dir)
            if _due(r, every) and time.monotonic() - failed >= min(every, 3600):
                compact(r, config, stop=stop)
            outage.up()
        except (locks.Busy, Stopped):
            continue
        except _AWAY as exc:
            outage.down(exc)
            stop.wait(2.0)
        except Exception:  # a failing compaction must not stop ingest: retried in an hour
            log.exception("compaction failed; the next try in %g s", min(every, 3600))
            failed = time.monotonic()


def _due(r: redis.Redis, every: float) -> bool:
    """Return whether the last compaction is ``every`` seconds old (the first one is due
    that long after the schedule first ran)."""
    now = int(time.time() * 1000)
    last = r.get(keyspace.COMPACTION_LAST)
    if last is None:
        r.set(keyspace.COMPACTION_LAST, json.dumps({"at": now}), nx=True)
        return False
    return now - json.loads(last)["at"] >= every * 1000


def start_schedule(
    r: redis.Redis, config: Config, stop: threading.Event
) -> threading.Thread | None:
    """Start the compaction schedule on a thread of its own (none if
    ``compact_every_hours`` ≤ 0)."""
    if config.compact_every_hours <= 0:
        return None
    thread = threading.Thread(
        target=run_schedule, args=(r, config, stop), name="dmp-compaction", daemon=True
    )
    thread.start()
    return thread
