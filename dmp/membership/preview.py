"""Segment preview and overlap: what a marketer looks at before and after applying.

A preview evaluates one definition (stored or from a file) over the latest matrix at
its as-of time: the size, breakdowns by tier, stage and reachable channel, and a sample
of the highest-scoring members with the conditions each one met. The overlap counts,
for every pair of segments of the last run, the persons in both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl
import redis

from dmp.config import Config
from dmp.matrix import builds, snapshots
from dmp.membership import results
from segments.definition import SegmentDefinition
from segments.evaluator import all_dids, compile_node, did_counts, profile_of
from segments.language import conditions

SAMPLE = 10
SHOWN = ["person_id", "email", "tier", "stage", "score", "channels", "top_interest"]


def preview(
    r: redis.Redis, config: Config, definition: SegmentDefinition, sample: int = SAMPLE
) -> dict[str, Any]:
    """Return the size, breakdowns and a sample (with conditions met) of a definition."""
    snapshot, manifest = snapshots.latest_build(config)
    total = pl.scan_parquet(snapshot).select(pl.len()).collect().item()
    found = evaluate_preview(
        pl.scan_parquet(snapshot),
        lambda: builds.build_touchpoints(r, config, manifest),
        manifest["as_of"],
        definition,
        sample,
    )
    return {
        "id": definition.id,
        "name": definition.name,
        "as_of": manifest["as_of"],
        "snapshot": snapshot.name,
        "members": found["members"],
        "persons": total,
        "share": found["members"] / total if total else 0.0,
        **found,
    }


def evaluate_preview(
    matrix: pl.LazyFrame,
    touchpoints: Callable[[], pl.LazyFrame],
    as_of: int,
    definition: SegmentDefinition,
    sample: int = SAMPLE,
) -> dict[str, Any]:
    """Return the members, breakdowns, counts per condition and the highest-scoring
    members of a definition over these matrix rows (``touchpoints`` read only for a
    ``did``): the whole matrix for :func:`preview`, a sample of it for an estimate."""
    found = conditions(definition.where, definition.source["where"])
    dids = all_dids({"_in": definition.where})
    profile = profile_of(matrix.collect_schema().names())
    if dids:
        matrix = matrix.join(did_counts(touchpoints(), dids, as_of), on="person_id", how="left")
    rows = (
        matrix.select(
            *SHOWN,
            compile_node(definition.where, profile).alias("_in"),
            *(compile_node(node, profile).alias(f"_c{i}") for i, (_, _, node) in enumerate(found)),
        )
        .filter(pl.col("_in"))
        .collect(engine="streaming")
    )
    return {
        "members": rows.height,
        "by_tier": _breakdown(rows, "tier"),
        "by_stage": _breakdown(rows, "stage"),
        "by_channel": _breakdown(rows.explode("channels"), "channels"),
        "conditions": [
            {"path": p, "condition": w, "members_meeting": int(rows[f"_c{i}"].sum())}
            for i, (p, w, _) in enumerate(found)
        ],
        "sample": _top_members(rows, found, sample),
    }


def _top_members(rows: pl.DataFrame, found: list, sample: int) -> list[dict[str, Any]]:
    """The highest-scoring members with the conditions each met."""
    top = rows.sort("score", "person_id", descending=[True, False], nulls_last=True).head(sample)
    members = []
    for row in top.iter_rows(named=True):
        met = [{"path": p, "condition": w} for i, (p, w, _) in enumerate(found) if row[f"_c{i}"]]
        members.append({k: row[k] for k in SHOWN} | {"met": met})
    return members


def _breakdown(rows: pl.DataFrame, column: str) -> dict[str, int]:
    counts = rows.drop_nulls(column).group_by(column).len().sort("len", column, descending=True)
    return dict(counts.iter_rows())


def overlap(config: Config) -> dict[str, Any]:
    """Return, for the last run's segments, the members of each and of each pair."""
    last = results.latest_run(config)
    if last is None:
        raise LookupError("no segment run yet: run `dmp segments run` first")
    ids = sorted(last["members"])
    members = results.latest_members(config).collect()
    both = [[0] * len(ids) for _ in ids]
    if members.height:
        wide = (
            members.with_columns(v=pl.lit(True))
            .pivot(on="segment_id", index="person_id", values="v")
            .fill_null(False)
        )
        present = [s for s in ids if s in wide.columns]
        pairs = [(a, b) for i, a in enumerate(present) for b in present[i:]]
        sums = wide.select((pl.col(a) & pl.col(b)).sum().alias(f"{a}\t{b}") for a, b in pairs)
        for (a, b), n in zip(pairs, sums.row(0), strict=True):
            both[ids.index(a)][ids.index(b)] = both[ids.index(b)][ids.index(a)] = int(n)
    return {
        "run_id": last["run_id"],
        "as_of": last["as_of"],
        "segments": ids,
        "members": [last["members"][s] for s in ids],
        "overlap": both,
    }
