"""What applying segment definitions would change, before they are applied.

Each definition and the version now stored are evaluated together over the latest
matrix snapshot (at its as-of time): who would enter, who would leave, with samples.
"""

from __future__ import annotations

from typing import Any

import polars as pl
import redis

from dmp.config import Config
from dmp.matrix import builds, snapshots
from dmp.membership import definitions
from segments.definition import SegmentDefinition
from segments.evaluator import evaluate

SAMPLE = 5


def plan(r: redis.Redis, config: Config, found: list[SegmentDefinition]) -> dict[str, Any]:
    """Return, per definition, the members now and after, and samples of who changes."""
    snapshot, manifest = snapshots.latest_build(config)
    as_of = manifest["as_of"]
    current = {s.definition.id: s for s in definitions.list_segments(r)}
    trees = {}
    for d in found:
        trees[f"new:{d.id}"] = d.where
        if d.id in current:
            trees[f"old:{d.id}"] = current[d.id].definition.where
    matrix = pl.scan_parquet(snapshot)
    touchpoints = builds.build_touchpoints(r, config, manifest)
    flags = evaluate(matrix, touchpoints, trees, as_of)
    shown = matrix.select("person_id", "email", "score", "stage")
    members = flags.join(shown, on="person_id", how="left").collect(engine="streaming")
    out = []
    for d in found:
        new = pl.col(f"new:{d.id}")
        old = pl.col(f"old:{d.id}") if d.id in current else pl.lit(False)
        added, removed = members.filter(new & ~old), members.filter(old & ~new)
        out.append(
            {
                "id": d.id,
                "version_now": current[d.id].version if d.id in current else None,
                "changed": d.id not in current
                or current[d.id].definition.canonical() != d.canonical(),
                "members_now": int(members.select(old.sum()).item()),
                "members_after": int(members.select(new.sum()).item()),
                "added": added.height,
                "removed": removed.height,
                "sample_added": _sample(added),
                "sample_removed": _sample(removed),
            }
        )
    return {"as_of": as_of, "snapshot": snapshot.name, "segments": out}


def _sample(frame: pl.DataFrame) -> list[dict[str, Any]]:
    rows = frame.sort("score", descending=True).head(SAMPLE)
    return rows.select("person_id", "email", "score", "stage").to_dicts()
