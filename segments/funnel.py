"""The funnel and the involvement pyramid of one matrix build.

- persons per stage (every person is in exactly one) and per tier (the pyramid);
- conversion between consecutive funnel stages (lead → mql → sal → sql → won): of the
  persons who ever reached a stage, the share who reached the next one (a person sales
  moved straight to sql counts as having passed mql and sal);
- median days spent in each stage, over every stay that began by the as-of time (a stay
  still going counts up to the as-of time).
"""

from __future__ import annotations

from typing import Any

import polars as pl

from dmp.records import FUNNEL, Stage, Tier
from segments.scoring import DAY_MS

_INDEX = {s.value: i for i, s in enumerate(FUNNEL)}


def build_funnel(rows: pl.DataFrame, history: pl.DataFrame, as_of_ms: int) -> dict[str, Any]:
    """Return the funnel of matrix ``rows`` (person_id, tier, stage, stage_since,
    first_seen) and the stage ``history`` (person_id, stage, at) recorded by ``as_of_ms``."""
    total = rows.height
    stage_counts = dict(rows.group_by("stage").len().iter_rows())
    tier_counts = dict(rows.group_by("tier").len().iter_rows())
    stays = _stays(rows, history, as_of_ms)
    reached = (
        stays.with_columns(index=pl.col("stage").replace_strict(_INDEX, default=None))
        .group_by("person_id")
        .agg(pl.col("index").max())
    )
    at_least = [
        reached.filter(pl.col("index") >= i).height if i else total for i in range(len(FUNNEL))
    ]
    conversion = [
        {
            "from": FUNNEL[i].value,
            "to": FUNNEL[i + 1].value,
            "reached_from": at_least[i],
            "reached_to": at_least[i + 1],
            "rate": round(at_least[i + 1] / at_least[i], 4) if at_least[i] else None,
        }
        for i in range(len(FUNNEL) - 1)
    ]
    medians = dict(stays.group_by("stage").agg((pl.col("days").median()).round(1)).iter_rows())
    return {
        "as_of": as_of_ms,
        "persons": total,
        "stages": [
            {
                "stage": s.value,
                "persons": stage_counts.get(s.value, 0),
                "median_days": medians.get(s.value),
            }
            for s in Stage
        ],
        "conversion": conversion,
        "tiers": [
            {"tier": t.value, "persons": tier_counts.get(t.value, 0)} for t in reversed(Tier)
        ],
    }


def _stays(rows: pl.DataFrame, history: pl.DataFrame, as_of_ms: int) -> pl.DataFrame:
    """Return one row per stay in a stage: ``person_id, stage, days``."""
    recorded = history.filter(pl.col("at") <= as_of_ms).select("person_id", "stage", "at")
    current = rows.select("person_id", "stage", at=pl.col("stage_since"))
    lead = rows.select("person_id", stage=pl.lit(Stage.LEAD.value), at=pl.col("first_seen"))
    entries = (
        pl.concat([lead, recorded, current])
        .filter(pl.col("at").is_not_null())
        .unique(["person_id", "stage", "at"])
        .sort("person_id", "at", "stage")
    )
    # Repeated records of the stage a person is already in continue the same stay.
    entries = entries.filter(
        (pl.col("stage") != pl.col("stage").shift(1).over("person_id")).fill_null(True)
    )
    ends = pl.col("at").shift(-1).over("person_id").fill_null(as_of_ms)
    return entries.select("person_id", "stage", days=(ends - pl.col("at")) / DAY_MS)
