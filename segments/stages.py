"""Lifecycle stages: what sales set, plus the scoring model's MQL and recycling rules.

A person's recorded stages (``person_id, stage, at, source``: sales via CRM or the API,
and the model's own earlier transitions) are an input of every build, so a full build
and an incremental one agree. The model moves a person only between ``lead``, ``mql``
and ``recycled``; a stage sales set (sal, sql, won, lost) stands until sales changes it.
"""

from __future__ import annotations

import polars as pl

from dmp.records import Stage, Tier
from segments.scoring import DAY_MS, StageRules

TIER_RANK = {t.value: t.rank for t in Tier}
STAGE_HISTORY_SCHEMA = {
    "person_id": pl.Utf8,
    "stage": pl.Utf8,
    "at": pl.Int64,
    "source": pl.Utf8,
}
_SALES = [s.value for s in Stage if s.set_by_sales]


def current_stages(history: pl.LazyFrame, as_of_ms: int) -> pl.LazyFrame:
    """Return ``person_id, recorded_stage, recorded_since``: the latest record by as-of."""
    return (
        history.filter(pl.col("at") <= as_of_ms)
        .sort("at", "stage")
        .group_by("person_id")
        .agg(
            recorded_stage=pl.col("stage").last(),
            recorded_since=pl.col("at").last(),
        )
    )


def apply_stage_rules(rows: pl.LazyFrame, rules: StageRules, as_of_ms: int) -> pl.LazyFrame:
    """Add ``stage`` and ``stage_since`` (and ``stage_changed``, the model's new moves).

    ``rows`` holds ``score, tier, first_seen, last_seen, recorded_stage,
    recorded_since``. A person with nothing recorded is a ``lead`` since first seen.
    """
    recorded = pl.col("recorded_stage")
    qualifies = (pl.col("score") >= rules.mql_score_gte) & (
        pl.col("tier").replace_strict(TIER_RANK, default=0) >= rules.mql_tier_gte.rank
    )
    idle_days = (as_of_ms - pl.col("last_seen").fill_null(pl.col("first_seen"))) / DAY_MS
    stale = ~qualifies & (idle_days >= rules.recycle_after_days)
    by_sales = recorded.is_in(_SALES)
    stage = (
        pl.when(by_sales)
        .then(recorded)
        .when(qualifies & (recorded != Stage.MQL.value).fill_null(True))
        .then(pl.lit(Stage.MQL.value))
        .when((recorded == Stage.MQL.value) & stale)
        .then(pl.lit(Stage.RECYCLED.value))
        .otherwise(recorded.fill_null(Stage.LEAD.value))
    )
    changed = stage != recorded.fill_null(Stage.LEAD.value)
    return rows.with_columns(stage=stage).with_columns(
        stage_changed=changed,
        stage_since=pl.when(changed)
        .then(pl.lit(as_of_ms))
        .otherwise(pl.coalesce("recorded_since", "first_seen")),
    )


def stage_changes(rows: pl.LazyFrame) -> pl.LazyFrame:
    """Return the model's new transitions as history records (source ``model``)."""
    return rows.filter("stage_changed").select(
        "person_id", "stage", at=pl.col("stage_since"), source=pl.lit("model")
    )
