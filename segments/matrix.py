"""The touchpoint matrix: one row per person, built from frames (no I/O here).

Inputs, read by ``dmp.matrixstore``:

- ``persons`` (:data:`PERSON_SCHEMA`): every person with tier, identifiers' kinds,
  granted consents and traits (a JSON object);
- ``touchpoints`` (:data:`TOUCHPOINT_SCHEMA`): every stored event, its ``person_id``
  already the person it belongs to now (merges applied);
- ``history`` (``segments.stages.STAGE_HISTORY_SCHEMA``): the stages recorded so far.

Everything that decays or counts in a window is measured at ``as_of_ms``; touchpoints
after it do not count, so a build at a past time shows the matrix as it was then.
"""

from __future__ import annotations

import polars as pl

from segments.content import ContentItem, next_content, page_key
from segments.scoring import DAY_MS, ScoringModel, activity_points, fit_points
from segments.stages import apply_stage_rules, current_stages, stage_changes

PERSON_SCHEMA = {
    "person_id": pl.Utf8,
    "tier": pl.Utf8,
    "email": pl.Utf8,  # null when unknown
    "contact": pl.List(pl.Utf8),  # of phone, address, crm
    "consents": pl.List(pl.Utf8),  # granted categories: analytics, ads, email
    "traits": pl.Utf8,  # JSON object
    "first_seen": pl.Int64,  # ms
}
TOUCHPOINT_SCHEMA = {
    "person_id": pl.Utf8,
    "timestamp": pl.Int64,
    "event": pl.Utf8,
    "type": pl.Utf8,
    "source": pl.Utf8,
    "channel": pl.Utf8,
    "site_id": pl.Utf8,
    "url": pl.Utf8,
    "title": pl.Utf8,
    "topics": pl.List(pl.Utf8),
    "properties": pl.Utf8,
}
WINDOWS = (7, 30, 90)  # days of the touchpoints_<n>d counts
PROFILE_TRAITS = ("company", "job_title", "employees", "industry", "country")
POINT = pl.Struct({"rule": pl.Utf8, "points": pl.Float64})
INTEREST = pl.Struct({"topic": pl.Utf8, "weight": pl.Float64})
CHANNEL_COUNT = pl.Struct({"channel": pl.Utf8, "count": pl.UInt32})


def build_matrix(
    persons: pl.LazyFrame,
    touchpoints: pl.LazyFrame,
    history: pl.LazyFrame,
    model: ScoringModel,
    catalog: tuple[ContentItem, ...],
    as_of_ms: int,
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Return the matrix rows (by person_id) and the model's new stage transitions."""
    past = touchpoints.filter(pl.col("timestamp") <= as_of_ms)
    rows = (
        persons.join(_scores(persons, past, model, as_of_ms), on="person_id", how="left")
        .join(_touch_counts(past, as_of_ms), on="person_id", how="left")
        .join(_channel_counts(past), on="person_id", how="left")
        .join(_interests(past, model, as_of_ms), on="person_id", how="left")
        .join(current_stages(history, as_of_ms), on="person_id", how="left")
        .with_columns(
            pl.col("fit_score", "activity_score", "score").fill_null(0.0),
            pl.col("score_breakdown").fill_null(pl.lit([], dtype=pl.List(POINT))),
            pl.col(*(f"touchpoints_{n}d" for n in WINDOWS), "touchpoints_total").fill_null(0),
            first_seen=pl.min_horizontal("first_seen", "first_touch"),
        )
    )
    rows = apply_stage_rules(rows, model.stages, as_of_ms)
    seen = past.filter(pl.col("url").is_not_null()).select(
        "person_id", page=page_key(pl.col("url"))
    )
    content = next_content(rows.select("person_id", "stage", "top_interest"), seen, catalog)
    matrix = rows.join(content, on="person_id", how="left").select(
        "person_id",
        "tier",
        "stage",
        "stage_since",
        "fit_score",
        "activity_score",
        "score",
        "score_breakdown",
        _channels().alias("channels"),
        "email",
        *(_trait(name) for name in PROFILE_TRAITS),
        "traits",
        "interests",
        "top_interest",
        "touchpoints_total",
        *(f"touchpoints_{n}d" for n in WINDOWS),
        "touchpoints_by_channel",
        "first_seen",
        "last_seen",
        days_since_last_touch=((as_of_ms - pl.col("last_seen")) / DAY_MS).round(2),
        last_channel="last_channel",
        next_content="next_content",
        next_content_title="next_content_title",
        next_content_url="next_content_url",
    )
    return matrix.sort("person_id"), stage_changes(rows)


def _scores(
    persons: pl.LazyFrame, past: pl.LazyFrame, model: ScoringModel, as_of_ms: int
) -> pl.LazyFrame:
    """Return ``person_id, fit_score, activity_score, score, score_breakdown``."""
    fit = fit_points(persons, model).with_columns(kind=pl.lit("fit"))
    activity = activity_points(past, model, as_of_ms).with_columns(kind=pl.lit("activity"))
    points = pl.concat([fit, activity])
    return (
        points.sort("person_id", pl.col("points").abs(), "rule", descending=[False, True, False])
        .group_by("person_id")
        .agg(
            fit_score=pl.col("points").filter(pl.col("kind") == "fit").sum(),
            activity_score=pl.col("points").filter(pl.col("kind") == "activity").sum(),
            score_breakdown=pl.struct("rule", points=pl.col("points").round(2)),
        )
        .with_columns(
            pl.col("fit_score").round(2),
            pl.col("activity_score").round(2),
            score=(pl.col("fit_score") + pl.col("activity_score")).round(2),
        )
    )


def _touch_counts(past: pl.LazyFrame, as_of_ms: int) -> pl.LazyFrame:
    ts = pl.col("timestamp")
    return past.group_by("person_id").agg(
        touchpoints_total=pl.len(),
        **{f"touchpoints_{n}d": (ts > as_of_ms - n * DAY_MS).sum() for n in WINDOWS},
        first_touch=ts.min(),
        last_seen=ts.max(),
        last_channel=pl.col("channel").sort_by(ts, "channel").last(),
    )


def _channel_counts(past: pl.LazyFrame) -> pl.LazyFrame:
    return (
        past.group_by("person_id", "channel")
        .agg(count=pl.len())
        .sort("person_id", "channel")
        .group_by("person_id")
        .agg(touchpoints_by_channel=pl.struct("channel", "count"))
    )


def _interests(past: pl.LazyFrame, model: ScoringModel, as_of_ms: int) -> pl.LazyFrame:
    """Topic weights decayed like activity, as shares of the person's whole topic weight."""
    decay = 0.5 ** ((as_of_ms - pl.col("timestamp")) / (DAY_MS * model.half_life_days))
    weights = (
        past.filter(pl.col("topics").list.len() > 0)
        .select("person_id", "topics", weight=decay)
        .explode("topics")
        .group_by("person_id", topic="topics")
        .agg(pl.col("weight").sum())
        .with_columns(weight=(pl.col("weight") / pl.col("weight").sum().over("person_id")).round(4))
        .sort("person_id", "weight", "topic", descending=[False, True, False])
    )
    return weights.group_by("person_id").agg(
        interests=pl.struct("topic", "weight"), top_interest=pl.col("topic").first()
    )


def _channels() -> pl.Expr:
    """Where a person can be reached, with consent: retargeting, email, phone, postal."""
    consents, contact = pl.col("consents"), pl.col("contact")
    bounced = pl.col("traits").str.json_path_match("$['email_status']") == "bounced"
    options = [
        ("retargeting", consents.list.contains("ads")),
        (
            "email",
            pl.col("email").is_not_null()
            & consents.list.contains("email")
            & ~bounced.fill_null(False),
        ),
        ("phone", contact.list.contains("phone")),
        ("postal", contact.list.contains("address")),
    ]
    listed = [pl.when(test.fill_null(False)).then(pl.lit(name)) for name, test in options]
    return pl.concat_list(listed).list.drop_nulls()


def _trait(name: str) -> pl.Expr:
    return pl.col("traits").str.json_path_match(f"$['{name}']").alias(name)
