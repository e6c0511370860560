"""What segment runs leave behind, read back: the newest run's manifest and memberships
(files under ``<data dir>/segments/``), a segment's members with their matrix rows, and
the run records in Redis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import redis

from dmp.config import Config
from dmp.matrix import snapshots
from dmp.membership.lookupsets import MEMBER_SCHEMA
from dmp.storage import keyspace


def segments_dir(config: Config) -> Path:
    """Return the folder holding membership snapshots and changes."""
    return config.data_dir / "segments"


def latest_run(config: Config) -> dict[str, Any] | None:
    """Return the newest run's manifest, or None before the first run."""
    pointer = segments_dir(config) / "LATEST"
    if not pointer.exists():
        return None
    path = segments_dir(config) / pointer.read_text().strip()
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def latest_members(config: Config) -> pl.LazyFrame:
    """Return the newest run's memberships (``segment_id, person_id``; empty before one)."""
    found = latest_run(config)
    if found is None:
        return pl.LazyFrame(schema=MEMBER_SCHEMA)
    return pl.scan_parquet(segments_dir(config) / found["members_file"])


def run_records(r: redis.Redis, limit: int = 20) -> list[dict[str, Any]]:
    """Return the newest run records, newest first (``failed``: segment id to error)."""
    return [{"failed": {}, **json.loads(x)} for x in r.lrange(keyspace.SEGMENT_RUNS, 0, limit - 1)]


def member_rows(
    config: Config, sid: str, limit: int | None = None, run: dict[str, Any] | None = None
) -> pl.DataFrame | None:
    """Return a segment's members in a run (the last one by default) with their matrix
    row's main fields, highest score first (None if the run has no such segment)."""
    found = latest_run(config) if run is None else run
    if found is None or sid not in found["members"]:
        return None
    members = pl.scan_parquet(segments_dir(config) / found["members_file"])
    ids = members.filter(pl.col("segment_id") == sid).select("person_id")
    snapshot = snapshots.matrix_dir(config) / found["matrix"]["snapshot"]
    if not snapshot.exists():  # removed by later builds: the newest rows will do
        snapshot = snapshots.latest_snapshot(config) or snapshot
    shown = ["person_id", "email", "tier", "stage", "score", "top_interest", "channels"]
    rows = ids.join(pl.scan_parquet(snapshot).select(shown), on="person_id", how="left")
    rows = rows.sort("score", "person_id", descending=[True, False], nulls_last=True)
    return (rows.head(limit) if limit else rows).collect()
