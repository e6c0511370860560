"""Segment runs: every stored segment evaluated over the latest matrix, membership kept.

A run builds the matrix (incrementally unless told otherwise), evaluates all segments
in one pass (:mod:`segments.evaluator`) and keeps what it found under
``<data dir>/segments/``:

- ``members-<stamp>.parquet``: ``segment_id, person_id``, every membership;
- ``counts-<stamp>.parquet``: each person's ``did`` counts and ``next_change`` (when a
  count next changes by time alone), which the next run keeps for everyone whose
  touchpoints did not change and whose counts have not expired; by ``person_key`` when
  every id of the matrix is dmp's (``segments.personkey``), else by ``person_id``;
- ``changes/dt=<day>/changes-<stamp>.parquet``: who entered and left which segment, at
  which as-of time, in which run and segment version (what exporters push);
- ``run-<stamp>.json``: the run's manifest (the matrix it read, the versions it used,
  counts); ``LATEST`` names the newest.

Then Redis: ``dmp:segment:<id>:members`` and ``dmp:person:{pid}:segments`` sets for
lookups, moved by the changes, and a run record in ``dmp:segments:runs``. Files first,
Redis after: should Redis miss a run's changes (a crash between the two), the next run
sees ``dmp:segments:applied`` behind and rewrites the sets from its own snapshot.

A segment that cannot be evaluated (stored before a check that now refuses it, or
raising when run) fails alone: the run records it under ``failed`` with its error, logs
one line, and keeps its members of the last run (snapshot and lookup sets); the others
run and are written.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import redis

from dmp.config import Config
from dmp.matrix import builds, snapshots, sources
from dmp.membership import definitions
from dmp.membership.lookupsets import MEMBER_SCHEMA, apply_run
from dmp.membership.results import latest_members, latest_run, segments_dir
from dmp.storage import keyspace, locks
from dmp.storage.parquetfiles import sync_dir, write_parquet_files, write_text
from segments.evaluator import (
    NEXT_CHANGE,
    all_dids,
    check_segment,
    did_counts,
    did_key,
    evaluate_apart,
    membership,
)
from segments.language import Node
from segments.matrix import TOUCHPOINT_SCHEMA
from segments.personkey import KEY, all_keyed, keys_of, person_id_of

log = logging.getLogger(__name__)

CHANGE_SCHEMA = {
    "segment_id": pl.Utf8,
    "person_id": pl.Utf8,
    "change": pl.Utf8,  # entered | left
    "at": pl.Int64,  # ms: the as-of time of the run that saw it
    "run_id": pl.Utf8,
    "version": pl.Int64,  # the segment's version in that run (the last one, for a deleted one)
}
KEEP_RUNS = 3  # runs whose member and count files are kept (changes are kept for good)
RUN_RECORDS = 1000  # run records kept in Redis


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a run did."""

    run_id: str
    as_of: int
    matrix: str  # the snapshot evaluated
    incremental: bool  # did counts kept from the run before for all but ``recounted``
    recounted: int  # persons whose did counts were counted afresh
    versions: dict[str, int]
    members: dict[str, int]
    entered: int
    left: int
    seconds: float
    failed: dict[str, str] = field(default_factory=dict)  # segment id: error (members kept)


# Errors of storage or the network, not of a segment: a run that meets one fails whole.
NOT_A_SEGMENTS_FAULT = (redis.RedisError, OSError)


BUSY = "another matrix build, segment run or live tick is in progress"


def run_lock(r: redis.Redis, wait_seconds: float = 0.0) -> AbstractContextManager[locks.Lease]:
    """Hold the lock that matrix builds and segment runs share; locks.Busy if another
    holds it past ``wait_seconds``."""
    return locks.hold(r, keyspace.SEGMENTS_LOCK, wait_seconds, BUSY)


def run(
    r: redis.Redis,
    config: Config,
    *,
    full: bool = False,
    build_matrix: bool = True,
    wait_seconds: float = 0.0,
    progress: Callable[[int], None] | None = None,
) -> RunResult:
    """Build the matrix (unless ``build_matrix`` is False), evaluate every stored segment
    and keep the membership. ``full`` rebuilds the matrix and recounts every person."""
    with run_lock(r, wait_seconds) as lock:
        if build_matrix:
            builds.build(r, config, progress=progress, incremental=not full)
        return _run(r, config, full, lock)


def _run(r: redis.Redis, config: Config, full: bool, lock: locks.Lease) -> RunResult:
    started = time.perf_counter()
    snapshot, matrix = snapshots.latest_build(config)
    as_of = matrix["as_of"]
    found, invalid = definitions.load_segments(r)
    trees = {s.definition.id: s.definition.where for s in found}
    versions = {s.definition.id: s.version for s in found} | {s.id: s.version for s in invalid}
    last = latest_run(config)
    (counts, recounted, flags), failed = _evaluate(
        r, config, snapshot, matrix, trees, None if full else last
    )
    failed |= {s.id: s.error for s in invalid}
    before = latest_members(config).collect()
    members = _members(flags, [sid for sid in trees if sid not in failed])
    if failed:  # their members of the last run stay: no change, sets as they are
        kept = before.filter(pl.col("segment_id").is_in(sorted(failed)))
        members = pl.concat([members, kept]).sort("segment_id", "person_id")
    last_versions = {**(last or {}).get("versions", {}), **versions}
    run_id = _run_id(as_of)
    changes = _changes(before, members, as_of, run_id, last_versions)
    sizes = {sid: 0 for sid in versions} | dict(members.group_by("segment_id").len().iter_rows())
    entered = int((changes["change"] == "entered").sum())
    manifest = {
        "run_id": run_id,
        "as_of": as_of,
        "at": int(time.time() * 1000),
        "matrix": {k: matrix[k] for k in ("snapshot", "as_of", "files", "last_merge")},
        "versions": versions,
        "dids": sorted(counts.columns[1:-1]),
        "counts_by": counts.columns[0],
        "incremental": recounted is not None,
        "recounted": counts.height if recounted is None else recounted,
        "members": sizes,
        "entered": entered,
        "left": changes.height - entered,
        "failed": failed,
    }
    if lock.lost.is_set() or not lock.held():  # stalled past its expiry: another may write
        raise locks.Busy("the run lock was lost (this run stalled); nothing written")
    _write_run(config, manifest, members, counts, changes)
    if lock.lost.is_set():  # lost while writing: the sets are left to the next run, which
        raise locks.Busy("the run lock was lost while the run was written")  # rewrites them
    apply_run(r, manifest, members, changes, last)
    result = RunResult(
        run_id,
        as_of,
        snapshot.name,
        recounted is not None,
        manifest["recounted"],
        versions,
        sizes,
        entered,
        changes.height - entered,
        time.perf_counter() - started,
        failed,
    )
    record = {**asdict(result), "seconds": result.seconds, "persons": flags.height}
    record["changes"] = _moves(changes)  # per segment [entered, left]: the UI's history
    r.lpush(keyspace.SEGMENT_RUNS, json.dumps(record))
    r.ltrim(keyspace.SEGMENT_RUNS, 0, RUN_RECORDS - 1)
    for sid, error in sorted(failed.items()):
        log.error(
            "segments: segment %s failed in run %s (its members of the last run stay): %s",
            sid,
            run_id,
            error,
        )
    log.info(
        "segments: %d segments over %s, %d entered, %d left, %s in %.2f s%s",
        len(sizes),
        snapshot.name,
        result.entered,
        result.left,
        f"{result.recounted} persons recounted" if result.incremental else "all counted",
        result.seconds,
        f", {len(failed)} failed" if failed else "",
    )
    return result


def _evaluate(
    r: redis.Redis,
    config: Config,
    snapshot: Path,
    matrix: dict[str, Any],
    trees: dict[str, Node],
    previous: dict[str, Any] | None,
) -> tuple[tuple[pl.DataFrame, int | None, pl.DataFrame], dict[str, str]]:
    """Return the did counts (and how many were recounted), every segment's Boolean
    column over the matrix rows, and the error of each segment that failed (left out)."""
    rows = pl.scan_parquet(snapshot)
    schema = rows.collect_schema()
    by = KEY if config.engine != "spark" and all_keyed(rows) else "person_id"

    def attempt(some: Mapping[str, Node]) -> tuple[pl.DataFrame, int | None, pl.DataFrame]:
        """Return the did counts, how many persons were recounted, and the membership."""
        counts, recounted = _counts(r, config, matrix, some, previous, by)
        if config.engine == "spark":
            from dmp.membership import sparkcounts  # pyspark is an extra

            return counts, recounted, sparkcounts.membership(config, snapshot, matrix, counts, some)
        return counts, recounted, membership(rows, counts.lazy(), some).collect()

    fatal: tuple[type[BaseException], ...] = NOT_A_SEGMENTS_FAULT
    if config.engine == "spark":
        from py4j.protocol import Py4JNetworkError

        from dmp.matrix import spark

        # Spark unreachable or gone is no segment's fault: the session is started (or
        # found dead) once, before any segment is tried alone, and a lost connection to
        # its JVM fails the run.
        spark.session(config)
        fatal = (*fatal, Py4JNetworkError)
    return evaluate_apart(
        trees,
        attempt,
        lambda tree, run: check_segment(tree, schema, TOUCHPOINT_SCHEMA, matrix["as_of"], run=run),
        fatal,
    )


def _counts(
    r: redis.Redis,
    config: Config,
    matrix: dict[str, Any],
    trees: Mapping[str, Node],
    previous: dict[str, Any] | None,
    by: str = "person_id",
) -> tuple[pl.DataFrame, int | None]:
    """Return every person's did counts by ``by`` (``person_id``, or ``person_key`` for a
    matrix of dmp's ids), and how many were recounted (None: all were)."""
    dids = all_dids(trees)
    keys = [did_key(d) for d in dids]
    person = pl.UInt64 if by == KEY else pl.Utf8
    schema = {by: person, **dict.fromkeys(keys, pl.UInt32), NEXT_CHANGE: pl.Int64}
    if not dids:
        return pl.DataFrame(schema=schema), None
    until = matrix["last_merge"]
    merged = sources.merge_map(r, until=until)  # read once: counts and touched persons
    files = builds.files_still_there(config, matrix)  # None: compacted since (--no-build)
    as_of = matrix["as_of"]

    def count(persons: list[str] | None) -> pl.DataFrame:
        """Return the did counts of everyone (None) or of ``persons``, on the engine."""
        if config.engine == "spark":
            from dmp.membership import sparkcounts  # pyspark is an extra

            found = sparkcounts.did_counts(config, merged, files, dids, as_of, persons)
        else:
            touchpoints = sources.read_touchpoints(config.events_dir, merged, files)
            if persons is not None:
                touchpoints = touchpoints.filter(pl.col("person_id").is_in(persons))
            counting = did_counts(touchpoints, dids, as_of, expiry=True, by=by)
            found = counting.collect(engine="streaming")
        return found.select(list(schema)).cast(schema)  # type: ignore[arg-type]

    if previous is None or files is None or not _can_keep(previous, matrix, keys, by):
        return count(None), None
    touched, removed = sources.touched_since(
        r, config, previous["matrix"], matrix["files"], merged, until=until
    )
    kept = pl.read_parquet(segments_dir(config) / previous["counts_file"]).select(list(schema))
    due = kept.filter(pl.col(NEXT_CHANGE) <= as_of)[by].to_list()
    if by == KEY:
        due = [person_id_of(k) for k in due]
    recount = sorted(touched.union(due))
    fresh = count(recount)
    ids = sorted(removed.union(recount))
    gone = keys_of(ids) if by == KEY else pl.Series(ids, dtype=pl.Utf8)
    counts = pl.concat([kept.filter(~pl.col(by).is_in(gone.implode())), fresh])
    return counts.sort(by), len(recount)


def _can_keep(previous: dict[str, Any], matrix: dict[str, Any], keys: list[str], by: str) -> bool:
    """Return whether the previous run's counts can be kept for unchanged persons."""
    if previous.get("counts_by", "person_id") != by:
        log.info(
            "segments: the last run counted by %s, this one by %s: every person counted",
            previous.get("counts_by", "person_id"),
            by,
        )
        return False
    if not set(keys) <= set(previous.get("dids", [])):
        log.info("segments: a did condition is new: every person counted")
        return False
    if matrix["as_of"] < previous["as_of"]:
        log.info("segments: the matrix is older than the last run's: every person counted")
        return False
    if not set(previous["matrix"]["files"]) <= set(matrix["files"]):
        log.info("segments: event files were rewritten since the last run: every person counted")
        return False
    return True


def _members(flags: pl.DataFrame, ids: list[str]) -> pl.DataFrame:
    """Return ``segment_id, person_id`` for every membership, sorted."""
    parts = [
        flags.filter(pl.col(sid)).select(pl.lit(sid).alias("segment_id"), "person_id")
        for sid in ids
    ]
    if not parts:
        return pl.DataFrame(schema=MEMBER_SCHEMA)
    return pl.concat(parts).sort("segment_id", "person_id")


def _changes(
    before: pl.DataFrame,
    after: pl.DataFrame,
    as_of: int,
    run_id: str,
    versions: dict[str, int],
) -> pl.DataFrame:
    """Return who entered and who left each segment between two membership tables."""
    on = ["segment_id", "person_id"]
    entered = after.join(before, on=on, how="anti").with_columns(change=pl.lit("entered"))
    left = before.join(after, on=on, how="anti").with_columns(change=pl.lit("left"))
    out = pl.concat([entered, left]).with_columns(
        at=pl.lit(as_of, pl.Int64),
        run_id=pl.lit(run_id),
        version=pl.col("segment_id").replace_strict(versions, default=None, return_dtype=pl.Int64),
    )
    return out.select(list(CHANGE_SCHEMA)).sort("segment_id", "change", "person_id")


def _moves(changes: pl.DataFrame) -> dict[str, list[int]]:
    """Return, per segment that changed, ``[entered, left]``."""
    counts = changes.group_by("segment_id").agg(
        (pl.col("change") == "entered").sum().alias("entered"),
        (pl.col("change") == "left").sum().alias("left"),
    )
    return {sid: [int(e), int(x)] for sid, e, x in counts.sort("segment_id").iter_rows()}


def _run_id(as_of: int) -> str:
    stamp = datetime.fromtimestamp(as_of / 1000, UTC).strftime("%Y%m%dT%H%M%S%f")[:-3]
    return f"{stamp}Z-{time.time_ns() % 10**9:09d}"


def _write_run(
    config: Config,
    manifest: dict[str, Any],
    members: pl.DataFrame,
    counts: pl.DataFrame,
    changes: pl.DataFrame,
) -> None:
    """Write the run's files, then its manifest, then move LATEST (each whole or absent)."""
    folder, run_id = segments_dir(config), manifest["run_id"]
    day = datetime.fromtimestamp(manifest["as_of"] / 1000, UTC).strftime("%Y-%m-%d")
    manifest["members_file"] = f"members-{run_id}.parquet"
    manifest["counts_file"] = f"counts-{run_id}.parquet"
    tables, paths = (
        [members.to_arrow(), counts.to_arrow()],
        [
            folder / manifest["members_file"],
            folder / manifest["counts_file"],
        ],
    )
    if changes.height:
        manifest["changes_file"] = f"changes/dt={day}/changes-{run_id}.parquet"
        tables.append(changes.to_arrow())
        paths.append(folder / manifest["changes_file"])
    write_parquet_files(tables, paths)
    write_text(folder / f"run-{run_id}.json", json.dumps(manifest))
    write_text(folder / "LATEST", f"run-{run_id}.json\n")
    sync_dir(folder)
    _prune(folder)


PINS = "pins"  # <segments dir>/pins/<run id>: touched on each page a partner reads of a run
PIN_SECONDS = 3600  # a run's members file stays this long after a partner's last page of it


def pin_members(config: Config, run_id: str) -> Path | None:
    """Keep a run's members file PIN_SECONDS longer (a partner pages through it); return
    the file, or None if it was removed already."""
    folder = segments_dir(config)
    # A file whose mtime is the pin's time, not a Redis key: _prune runs where the run
    # writes its files and needs no Redis, and a pin lives where the file it keeps does.
    (folder / PINS).mkdir(parents=True, exist_ok=True)
    (folder / PINS / run_id).touch()
    found = folder / f"members-{run_id}.parquet"
    return found if found.exists() else None


def _pinned(folder: Path) -> set[str]:
    """Return the runs a partner read a page of in the last PIN_SECONDS."""
    now, out = time.time(), set()
    for pin in (folder / PINS).glob("*") if (folder / PINS).is_dir() else ():
        try:
            if now - pin.stat().st_mtime < PIN_SECONDS:
                out.add(pin.name)
        except FileNotFoundError:  # removed by another prune
            continue
    return out


def _prune(folder: Path) -> None:
    """Remove the member and count files of all but the KEEP_RUNS last written runs; the
    members file and manifest of a run a partner pages through stay while it is pinned."""
    runs = sorted(folder.glob("run-*.json"), key=lambda p: p.stat().st_mtime)
    pinned = _pinned(folder)
    for old in runs[:-KEEP_RUNS]:
        run_id = old.stem[len("run-") :]
        (folder / f"counts-{run_id}.parquet").unlink(missing_ok=True)
        if run_id in pinned:
            continue
        for name in (f"members-{run_id}.parquet", old.name, f"{PINS}/{run_id}"):
            (folder / name).unlink(missing_ok=True)
