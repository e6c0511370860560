"""The matrix's I/O: persons and stages from Redis, touchpoints from the event log, snapshots.

``segments.matrix`` computes; this module reads what it needs and writes the result as a
Parquet snapshot under ``<data dir>/matrix/`` (atomically; ``LATEST`` names the newest),
then records the model's new stage transitions in Redis.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import redis

from dmp import keyspace, lifecycle
from dmp.config import Config
from dmp.eventlog import scan_events
from dmp.parquetfiles import sync_dir, tmp_name, write_parquet_files
from dmp.profiles import parse_consent_summary
from segments.content import ContentItem, parse_catalog
from segments.funnel import build_funnel
from segments.matrix import PERSON_SCHEMA, TOUCHPOINT_SCHEMA, build_matrix
from segments.scoring import ScoringModel, default_model_text, parse_model
from segments.stages import STAGE_HISTORY_SCHEMA

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


def scoring_model(r: redis.Redis) -> ScoringModel:
    """Return the applied scoring model (the default one until one is applied)."""
    return parse_model(r.get(keyspace.SCORING_MODEL) or default_model_text())


def content_catalog(r: redis.Redis) -> tuple[ContentItem, ...]:
    """Return the applied content catalog (empty until one is applied)."""
    text = r.get(keyspace.CONTENT_CATALOG)
    return parse_catalog(text) if text else ()


def read_people(r: redis.Redis, progress: Callable[[int], None] | None = None) -> People:
    """Return every person's profile, traits and stage records, and the merge map."""
    pids = _person_ids(r)
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


def merge_map(r: redis.Redis) -> dict[str, str]:
    """Return merged person id -> live person id, from the merge log."""
    pointers: dict[str, str] = {}
    start = "-"
    while True:
        entries = r.xrange(keyspace.MERGES, min=start, count=10_000)
        for _, entry in entries:
            if entry.get("from") and entry.get("into"):
                pointers[entry["from"]] = entry["into"]
        if len(entries) < 10_000:
            return _resolve(pointers)
        start = "(" + entries[-1][0]


def read_touchpoints(events_dir: Path, merged: dict[str, str]) -> pl.LazyFrame:
    """Return the event log's identified events as touchpoints of the persons they are now."""
    events = scan_events(events_dir).filter(pl.col("person_id").is_not_null())
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
) -> BuildResult:
    """Build the whole matrix as of a time (now by default) and write a snapshot."""
    started = time.perf_counter()
    as_of = as_of_ms if as_of_ms is not None else int(time.time() * 1000)
    model, catalog = scoring_model(r), content_catalog(r)
    people = read_people(r, progress)
    touchpoints = read_touchpoints(config.events_dir, people.merged)
    matrix, changes = build_matrix(
        people.persons.lazy(), touchpoints, people.history.lazy(), model, catalog, as_of
    )
    rows, new_stages = pl.collect_all([matrix, changes], engine="streaming")
    n_touch = touchpoints.select(pl.len()).collect().item()
    history = pl.concat([people.history, new_stages])
    funnel = build_funnel(rows, history, as_of)
    path = _write_snapshot(config, rows, as_of, funnel)
    # Recorded only once the snapshot is durable: a crash before this leaves the next
    # build to see the same moves again, never a record without its snapshot.
    n_changes = lifecycle.record_stages(r, new_stages.iter_rows())
    seconds = time.perf_counter() - started
    log.info(
        "matrix: %d persons, %d touchpoints, %d stage changes as of %s in %.1f s -> %s",
        rows.height, n_touch, n_changes, _iso(as_of), seconds, path.name,
    )  # fmt: skip
    return BuildResult(path, as_of, rows.height, n_touch, n_changes, seconds)


def _write_snapshot(config: Config, rows: pl.DataFrame, as_of_ms: int, funnel: dict) -> Path:
    """Write the snapshot and its funnel, then point LATEST at them (each step atomic)."""
    folder = matrix_dir(config)
    stamp = datetime.fromtimestamp(as_of_ms / 1000, UTC).strftime("%Y%m%dT%H%M%S%f")[:-3]
    path = folder / f"matrix-{stamp}Z-{time.time_ns() % 10**9:09d}.parquet"
    write_parquet_files([rows.to_arrow()], [path])
    _write_text(funnel_path(path), json.dumps(funnel, indent=1))
    _write_text(folder / "LATEST", path.name + "\n")
    sync_dir(folder)
    return path


def _write_text(path: Path, text: str) -> None:
    with open(tmp_name(path), "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp_name(path), path)


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
