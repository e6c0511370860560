"""The matrix's I/O: persons and stages from Redis, touchpoints from the event log, snapshots.

``segments.matrix`` computes; this module reads what it needs and writes the result as a
Parquet snapshot under ``<data dir>/matrix/`` (atomically; ``LATEST`` names the newest),
then records the model's new stage transitions in Redis.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import redis

from dmp.config import Config
from dmp.ingest.eventlog import scan_events
from dmp.people import lifecycle
from dmp.people.profiles import parse_consent_summary
from dmp.storage import keyspace
from dmp.storage.parquetfiles import sync_dir, write_parquet_files, write_text
from segments.content import ContentItem, parse_catalog
from segments.funnel import build_funnel
from segments.matrix import PERSON_SCHEMA, TOUCHPOINT_SCHEMA, finish_matrix
from segments.personstate import decay_scale, person_state
from segments.scoring import ScoringModel, default_model_text, parse_model
from segments.stages import STAGE_HISTORY_SCHEMA, current_stages

log = logging.getLogger(__name__)

_PROFILE = ["tier", "email", "contact", "cs", "first_seen", "merged_into"]
SCAN_COUNT = 1000


@dataclass(frozen=True, slots=True)
class People:
    """Everything Redis holds that the matrix needs."""

    persons: pl.DataFrame  # PERSON_SCHEMA, live persons only
    history: pl.DataFrame  # STAGE_HISTORY_SCHEMA
    merged: dict[str, str]  # merged person id -> the live person it leads to


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What a build wrote."""

    path: Path
    as_of_ms: int
    persons: int
    touchpoints: int
    stage_changes: int
    seconds: float


def model_texts(r: redis.Redis) -> tuple[str, str]:
    """Return the applied scoring model's YAML (the default one until one is applied) and
    the content catalog's (empty until one is applied)."""
    model, catalog = r.mget(keyspace.SCORING_MODEL, keyspace.CONTENT_CATALOG)
    return model or default_model_text(), catalog or ""


def scoring_model(r: redis.Redis) -> ScoringModel:
    """Return the applied scoring model."""
    return parse_model(model_texts(r)[0])


def content_catalog(r: redis.Redis) -> tuple[ContentItem, ...]:
    """Return the applied content catalog."""
    text = model_texts(r)[1]
    return parse_catalog(text) if text else ()


def read_people(
    r: redis.Redis,
    progress: Callable[[int], None] | None = None,
    pids: list[str] | None = None,
) -> People:
    """Return every person's (or ``pids``') profile, traits, stage records and merges."""
    pids = _person_ids(r) if pids is None else pids
    rows: list[dict] = []
    history: list[dict] = []
    pointers: dict[str, str] = {}
    for start in range(0, len(pids), SCAN_COUNT):
        chunk = pids[start : start + SCAN_COUNT]
        with r.pipeline(transaction=False) as pipe:
            for pid in chunk:
                pipe.hmget(keyspace.person(pid), _PROFILE)
                pipe.hgetall(keyspace.person(pid, "traits"))
                pipe.lrange(keyspace.person(pid, "stages"), 0, -1)
            found = pipe.execute()
        for i, pid in enumerate(chunk):
            (tier, email, contact, cs, first, merged_into), traits, stages = found[
                3 * i : 3 * i + 3
            ]
            if merged_into:
                pointers[pid] = merged_into
                continue
            if not tier:
                continue
            consents = parse_consent_summary(cs)
            rows.append(
                {
                    "person_id": pid,
                    "tier": tier,
                    "email": email or None,
                    "contact": [c for c in (contact or "").split(",") if c],
                    "consents": sorted(c for c, granted in consents.items() if granted),
                    "traits": _traits_json(traits),
                    "first_seen": int(first) if first else None,
                }
            )
            for rec in lifecycle.parse_records(stages):
                history.append({"person_id": pid, **{k: rec[k] for k in ("stage", "at", "source")}})
        if progress is not None:
            progress(len(chunk))
    return People(
        pl.DataFrame(rows, schema=PERSON_SCHEMA),
        pl.DataFrame(history, schema=STAGE_HISTORY_SCHEMA),
        _resolve(pointers),
    )


def _person_ids(r: redis.Redis) -> list[str]:
    """Return the id of every profile hash (live or merged), sorted."""
    prefix, out = "dmp:person:{", set()
    for key in r.scan_iter(match=f"{prefix}*}}", count=SCAN_COUNT, _type="HASH"):
        out.add(key[len(prefix) : -1])
    return sorted(out)


def _traits_json(traits: dict[str, str]) -> str:
    """Return a traits hash (JSON values) as one JSON object, names sorted."""
    return "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in sorted(traits.items())) + "}"


def _resolve(pointers: dict[str, str]) -> dict[str, str]:
    """Follow merge chains to the live person (a cycle, which merges never make, stops)."""
    out = {}
    for pid in pointers:
        target, hops = pointers[pid], 0
        while target in pointers and hops < 64:
            target, hops = pointers[target], hops + 1
        out[pid] = target
    return out


def merge_map(r: redis.Redis, until: str = "+") -> dict[str, str]:
    """Return merged person id -> live person id, from the merge log (up to ``until``)."""
    pointers: dict[str, str] = {}
    start = "-"
    while True:
        entries = r.xrange(keyspace.MERGES, min=start, max=until, count=10_000)
        for _, entry in entries:
            if entry.get("from") and entry.get("into"):
                pointers[entry["from"]] = entry["into"]
        if len(entries) < 10_000:
            return _resolve(pointers)
        start = "(" + entries[-1][0]


def read_touchpoints(
    events_dir: Path,
    merged: dict[str, str],
    files: list[str] | None = None,
    persons: list[str] | None = None,
) -> pl.LazyFrame:
    """Return the event log's (or its ``files'``) identified events as touchpoints of the
    persons they are now (only those stored under ``persons``' ids, if given)."""
    events = scan_events(events_dir, files).filter(
        pl.col("person_id").is_not_null() if persons is None else pl.col("person_id").is_in(persons)
    )
    frame = events.select(
        "person_id",
        pl.col("timestamp").dt.epoch("ms").alias("timestamp"),
        *(c for c in TOUCHPOINT_SCHEMA if c not in ("person_id", "timestamp")),
    ).cast(TOUCHPOINT_SCHEMA)  # type: ignore[arg-type]
    if not merged:
        return frame
    moves = pl.LazyFrame(
        {"person_id": list(merged), "now": list(merged.values())},
        schema={"person_id": pl.Utf8, "now": pl.Utf8},
    )
    return (
        frame.join(moves, on="person_id", how="left")
        .with_columns(person_id=pl.coalesce("now", "person_id"))
        .drop("now")
    )


def matrix_dir(config: Config) -> Path:
    """Return the folder holding the matrix snapshots."""
    return config.data_dir / "matrix"


def latest_snapshot(config: Config) -> Path | None:
    """Return the newest snapshot, or None before the first build."""
    pointer = matrix_dir(config) / "LATEST"
    if not pointer.exists():
        return None
    path = matrix_dir(config) / pointer.read_text().strip()
    return path if path.exists() else None


def latest_build(config: Config) -> tuple[Path, dict]:
    """Return the newest snapshot and its manifest (LookupError before the first build)."""
    snapshot = latest_snapshot(config)
    if snapshot is None:
        raise LookupError("no matrix yet: run `dmp matrix build` first")
    return snapshot, json.loads(manifest_path(snapshot).read_text(encoding="utf-8"))


def build_touchpoints(r: redis.Redis, config: Config, manifest: dict) -> pl.LazyFrame:
    """Return the touchpoints a build read: its event files, merges up to its last one."""
    merged = merge_map(r, until=manifest["last_merge"])
    return read_touchpoints(config.events_dir, merged, manifest["files"])


def snapshot_row(config: Config, pid: str) -> dict | None:
    """Return one person's row of the latest snapshot (None before a build has them)."""
    path = latest_snapshot(config)
    if path is None:
        return None
    rows = pl.scan_parquet(path).filter(pl.col("person_id") == pid).collect()
    return rows.row(0, named=True) if rows.height else None


def build(
    r: redis.Redis,
    config: Config,
    as_of_ms: int | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    incremental: bool = False,
) -> BuildResult:
    """Build the matrix as of a time (now by default) and write a snapshot.

    ``incremental`` refolds only the persons touched since the last build (new event
    files, events after its as-of time, stage changes, merges) and finishes everyone's
    row from the kept state: the rows a full build would give. It falls back to a full
    build when there is no earlier build, the model or catalog changed, or the as-of
    time goes back.
    """
    started = time.perf_counter()
    as_of = as_of_ms if as_of_ms is not None else int(time.time() * 1000)
    model_text, catalog_text = model_texts(r)
    model, catalog = parse_model(model_text), parse_catalog(catalog_text) if catalog_text else ()
    files = event_files(config.events_dir)
    marks = sorted(r.smembers(keyspace.MATRIX_TOUCHED))
    last_merge = _last_merge_id(r)
    scale = decay_scale(model, as_of)
    fingerprint = {"model": _digest(model_text), "catalog": _digest(catalog_text), "scale": scale}
    previous = _previous_build(config, fingerprint, as_of) if incremental else None
    if previous is None:
        people = read_people(r, progress)
        # Tombstones miss persons merged within the batch that made them (never stored;
        # their events keep the short-lived id): the merge log has those too.
        merged = _resolve({**people.merged, **merge_map(r)})
        touchpoints = read_touchpoints(config.events_dir, merged)
        state = person_state(people.persons.lazy(), touchpoints, model, catalog, as_of, scale)
        history = people.history.lazy()
        touched = None
    else:
        manifest, folder = previous
        merged = merge_map(r)
        touched, removed = touched_since(r, config, manifest, files, merged, marks)
        people = read_people(r, progress, sorted(touched))
        touchpoints = read_touchpoints(config.events_dir, merged).filter(
            pl.col("person_id").is_in(sorted(touched))
        )
        fresh = person_state(people.persons.lazy(), touchpoints, model, catalog, as_of, scale)
        gone = sorted(touched | removed)
        kept = pl.scan_parquet(folder / manifest["state"]).filter(~pl.col("person_id").is_in(gone))
        state = pl.concat([kept, fresh.select(kept.collect_schema().names())])
        old = pl.scan_parquet(folder / manifest["history"])
        history = pl.concat([old.filter(~pl.col("person_id").is_in(gone)), people.history.lazy()])
    state = state.cache()
    matrix, changes = finish_matrix(state, current_stages(history, as_of), model, catalog, as_of)
    rows, new_stages, states, past = pl.collect_all(
        [matrix, changes, state, history], engine="streaming"
    )
    n_touch = int(rows["touchpoints_total"].sum())
    history_now = pl.concat([past, new_stages])
    funnel = build_funnel(rows, history_now, as_of)
    manifest = {
        "as_of": as_of,
        "files": files,
        "last_merge": last_merge,
        **fingerprint,
        "incremental": touched is not None,
        "refolded": rows.height if touched is None else len(touched),
    }
    path = _write_snapshot(config, rows, as_of, funnel, states, history_now, manifest)
    # Recorded only once the snapshot is durable: a crash before this leaves the next
    # build to see the same moves again, never a record without its snapshot.
    n_changes = lifecycle.record_stages(r, new_stages.iter_rows())
    if marks:
        r.srem(keyspace.MATRIX_TOUCHED, *marks)
    seconds = time.perf_counter() - started
    log.info(
        "matrix: %d persons (%s), %d touchpoints, %d stage changes as of %s in %.1f s -> %s",
        rows.height, "full" if touched is None else f"{len(touched)} refolded", n_touch,
        n_changes, _iso(as_of), seconds, path.name,
    )  # fmt: skip
    return BuildResult(path, as_of, rows.height, n_touch, n_changes, seconds)


def event_files(events_dir: Path) -> list[str]:
    """Return the event log's files, relative to it, sorted."""
    return sorted(str(p.relative_to(events_dir)) for p in events_dir.glob("dt=*/part-*.parquet"))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _last_merge_id(r: redis.Redis) -> str:
    last = r.xrevrange(keyspace.MERGES, count=1)
    return last[0][0] if last else "0-0"


def _previous_build(config: Config, fingerprint: dict, as_of: int) -> tuple[dict, Path] | None:
    """Return the last build's manifest and folder if an incremental build can use it."""
    snapshot = latest_snapshot(config)
    if snapshot is None or not manifest_path(snapshot).exists():
        log.info("matrix: no earlier build to go on from: a full build")
        return None
    manifest = json.loads(manifest_path(snapshot).read_text(encoding="utf-8"))
    if any(manifest.get(k) != v for k, v in fingerprint.items()):
        log.info("matrix: the scoring model, the catalog or the decay scale changed: a full build")
        return None
    if as_of < manifest["as_of"]:
        log.info("matrix: the as-of time is before the last build's: a full build")
        return None
    return manifest, snapshot.parent


def touched_since(
    r: redis.Redis,
    config: Config,
    manifest: dict,
    files: list[str],
    merged: dict[str, str],
    marks: list[str] = (),  # type: ignore[assignment]
    until: str = "+",
) -> tuple[set[str], set[str]]:
    """Return (persons to refold, persons merged away) between the build ``manifest``
    describes (its ``files``, ``as_of`` and ``last_merge``) and now (``files``, merges
    up to ``until``)."""
    events = config.events_dir
    new = [events / f for f in files if f not in set(manifest["files"])]
    frames = [
        scan_events(events)
        .filter(pl.col("timestamp").dt.epoch("ms") > manifest["as_of"])
        .select("person_id")
    ]
    if new:
        frames.append(pl.scan_parquet(new).select("person_id"))
    found = pl.concat(frames).drop_nulls().unique().collect()["person_id"].to_list()
    removed, targets = set(), set()
    for _, entry in r.xrange(keyspace.MERGES, min="(" + manifest["last_merge"], max=until):
        removed.add(entry.get("from", ""))
        targets.add(entry.get("into", ""))
    touched = {merged.get(p, p) for p in (*found, *marks, *targets) if p}
    return touched - removed, removed - touched


def _write_snapshot(
    config: Config,
    rows: pl.DataFrame,
    as_of_ms: int,
    funnel: dict,
    state: pl.DataFrame,
    history: pl.DataFrame,
    manifest: dict,
) -> Path:
    """Write the snapshot with its state, history, funnel and manifest, then point LATEST
    at it. Every file is whole or absent; LATEST moves last."""
    folder = matrix_dir(config)
    stamp = datetime.fromtimestamp(as_of_ms / 1000, UTC).strftime("%Y%m%dT%H%M%S%f")[:-3]
    path = folder / f"matrix-{stamp}Z-{time.time_ns() % 10**9:09d}.parquet"
    sidecars = [path.with_suffix(".state.parquet"), path.with_suffix(".history.parquet")]
    tables = [rows.to_arrow(), state.to_arrow(), history.to_arrow()]
    write_parquet_files(tables, [path, *sidecars])
    manifest = {**manifest, "snapshot": path.name, "state": sidecars[0].name}
    manifest["history"] = sidecars[1].name
    write_text(funnel_path(path), json.dumps(funnel, indent=1))
    write_text(manifest_path(path), json.dumps(manifest))
    write_text(folder / "LATEST", path.name + "\n")
    sync_dir(folder)
    _prune(folder)
    return path


KEEP_SNAPSHOTS = 5  # the worker's schedule builds often: older snapshots are removed


def _prune(folder: Path) -> None:
    """Remove every file of all but the KEEP_SNAPSHOTS last written snapshots (a build
    as of an earlier time is newer than its name says)."""
    snapshots = sorted(folder.glob("matrix-*Z-*[0-9].parquet"), key=lambda p: p.stat().st_mtime)
    for old in snapshots[:-KEEP_SNAPSHOTS]:
        for part in folder.glob(old.stem + ".*"):
            part.unlink(missing_ok=True)


def manifest_path(snapshot: Path) -> Path:
    """Return where a snapshot's manifest (inputs, for incremental builds) is kept."""
    return snapshot.with_suffix(".manifest.json")


def funnel_path(snapshot: Path) -> Path:
    """Return where the funnel of a snapshot is kept."""
    return snapshot.with_suffix(".funnel.json")


def latest_funnel(config: Config) -> dict | None:
    """Return the funnel of the latest build, or None before the first build."""
    path = latest_snapshot(config)
    if path is None or not funnel_path(path).exists():
        return None
    return json.loads(funnel_path(path).read_text(encoding="utf-8"))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")
