"""What applying segment definitions would change, before they are applied.

Each definition and the version now stored are evaluated together over the latest
matrix snapshot (at its as-of time): who would enter, who would leave, with samples.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl
import redis

from dmp.config import Config
from dmp.matrix import builds, snapshots
from dmp.membership import definitions
from dmp.membership.definitions import StoredSegment
from segments.definition import SegmentDefinition
from segments.evaluator import evaluate

SAMPLE = 5


def plan(r: redis.Redis, config: Config, found: list[SegmentDefinition]) -> dict[str, Any]:
    """Return, per definition, the members now and after, and samples of who changes."""
    snapshot, manifest = snapshots.latest_build(config)
    touchpoints = builds.build_touchpoints(r, config, manifest)
    current = {s.definition.id: s for s in definitions.list_segments(r)}
    out = evaluate_plan(pl.scan_parquet(snapshot), touchpoints, manifest["as_of"], current, found)
    return {"as_of": manifest["as_of"], "snapshot": snapshot.name, "segments": out}


def evaluate_plan(
    matrix: pl.LazyFrame,
    touchpoints: pl.LazyFrame,
    as_of: int,
    current: Mapping[str, StoredSegment],
    found: list[SegmentDefinition],
) -> list[dict[str, Any]]:
    """Return each definition's plan entry over these matrix rows and touchpoints (the
    whole matrix for :func:`plan`, a sample of it for an estimate) against the versions
    stored now (``current``, by id)."""
    trees = {}
    for d in found:
        trees[f"new:{d.id}"] = d.where
        if d.id in current:
            trees[f"old:{d.id}"] = current[d.id].definition.where
    flags = evaluate(matrix, touchpoints, trees, as_of)
    shown = matrix.select("person_id", "email", "score", "stage")
    members = flags.join(shown, on="person_id", how="left").collect(engine="streaming")
    return [_entry(d, members, current) for d in found]


def _entry(
    d: SegmentDefinition, members: pl.DataFrame, current: Mapping[str, StoredSegment]
) -> dict[str, Any]:
    """One definition's plan entry from everyone's flags (``new:<id>``, ``old:<id>``)."""
    new = pl.col(f"new:{d.id}")
    old = pl.col(f"old:{d.id}") if d.id in current else pl.lit(False)
    added, removed = members.filter(new & ~old), members.filter(old & ~new)
    return {
        "id": d.id,
        "version_now": current[d.id].version if d.id in current else None,
        "changed": d.id not in current or current[d.id].definition.canonical() != d.canonical(),
        "members_now": int(members.select(old.sum()).item()),
        "members_after": int(members.select(new.sum()).item()),
        "added": added.height,
        "removed": removed.height,
        "sample_added": _sample(added),
        "sample_removed": _sample(removed),
    }


def _sample(frame: pl.DataFrame) -> list[dict[str, Any]]:
    rows = frame.sort("score", descending=True).head(SAMPLE)
    return rows.select("person_id", "email", "score", "stage").to_dicts()
