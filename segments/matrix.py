"""The touchpoint matrix: one row per person, built from frames (no I/O here).

Inputs, read by ``dmp.matrix.snapshots``:

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

from segments.content import ContentItem, next_content
from segments.personstate import ANCHOR_MS, WINDOWS, decay_scale, person_state
from segments.scoring import DAY_MS, ScoringModel
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
PROFILE_TRAITS = ("company", "job_title", "employees", "industry", "country")
# The matrix's moments, epoch ms in a snapshot (what the rule language compares); an
# export shows them as timestamps (see moments_as_timestamps).
MOMENTS = ("stage_since", "first_seen", "last_seen")
POINT = pl.Struct({"rule": pl.Utf8, "points": pl.Float64})


def moments_as_timestamps(matrix: pl.DataFrame) -> pl.DataFrame:
    """Return the matrix with its moments as UTC timestamps (for people and other tools)."""
    there = [name for name in MOMENTS if name in matrix.columns]
    return matrix.with_columns(
        pl.from_epoch(pl.col(n), "ms").dt.replace_time_zone("UTC") for n in there
    )


def build_matrix(
    persons: pl.LazyFrame,
    touchpoints: pl.LazyFrame,
    history: pl.LazyFrame,
    model: ScoringModel,
    catalog: tuple[ContentItem, ...],
    as_of_ms: int,
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Return the matrix rows (by person_id) and the model's new stage transitions."""
    scale = decay_scale(model, as_of_ms)
    state = person_state(persons, touchpoints, model, catalog, as_of_ms, scale).cache()
    return finish_matrix(state, current_stages(history, as_of_ms), model, catalog, as_of_ms)


def finish_matrix(
    state: pl.LazyFrame,
    recorded: pl.LazyFrame,
    model: ScoringModel,
    catalog: tuple[ContentItem, ...],
    as_of_ms: int,
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Return the rows and new stage transitions of person states at ``as_of_ms``.

    ``recorded`` is ``segments.stages.current_stages`` of the stage history.
    """
    ages = (as_of_ms - ANCHOR_MS) / (DAY_MS * model.half_life_days)
    activity = [
        (rule.points * pl.col(f"w_{i}") * pl.lit(2.0).pow(pl.col("scale") - ages)).alias(f"act_{i}")
        for i, rule in enumerate(model.activity)
    ]
    windows = [
        pl.col("recent")
        .list.eval(pl.element() > as_of_ms - n * DAY_MS)
        .list.sum()
        .fill_null(0)
        .cast(pl.UInt32)
        .alias(f"touchpoints_{n}d")
        for n in WINDOWS
    ]
    rows = (
        state.with_columns(*activity, *windows)
        .join(recorded, on="person_id", how="left")
        .cache()  # read twice below: computed once
    )
    rows = apply_stage_rules(_add_scores(rows, model), model.stages, as_of_ms).cache()
    seen = rows.select("person_id", page="seen_pages").explode("page").drop_nulls("page")
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
        pl.col("touchpoints_total").cast(pl.UInt32),
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


def _add_scores(rows: pl.LazyFrame, model: ScoringModel) -> pl.LazyFrame:
    """Add fit_score, activity_score, score and score_breakdown from the rule columns.

    The breakdown keeps the model's rule order (fit rules, then activity rules); readers
    sort it for display (:func:`by_weight`).
    """
    columns = [f"fit_{i}" for i in range(len(model.fit))]
    columns += [f"act_{i}" for i in range(len(model.activity))]
    names = [r.name for r in model.fit] + [r.name for r in model.activity]
    fit = pl.sum_horizontal(pl.lit(0.0), *columns[: len(model.fit)]).round(2)
    act = pl.sum_horizontal(pl.lit(0.0), *columns[len(model.fit) :]).round(2)
    scored = rows.with_columns(fit_score=fit, activity_score=act).with_columns(
        score=(pl.col("fit_score") + pl.col("activity_score")).round(2)
    )
    if not columns:
        return scored.with_columns(score_breakdown=pl.lit([], dtype=pl.List(POINT)))
    breakdown = (
        rows.select("person_id", *columns)
        .unpivot(index="person_id", variable_name="column", value_name="points")
        .drop_nulls("points")
        .with_columns(order=pl.col("column").replace_strict(columns, range(len(columns))))
        .sort("person_id", "order")
        .group_by("person_id", maintain_order=True)
        .agg(
            score_breakdown=pl.struct(
                rule=pl.col("column").replace_strict(columns, names),
                points=pl.col("points").round(2),
            )
        )
    )
    return (
        scored.join(breakdown, on="person_id", how="left")
        .with_columns(pl.col("score_breakdown").fill_null(pl.lit([], dtype=pl.List(POINT))))
        .drop(columns)
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


def by_weight(breakdown: list[dict]) -> list[dict]:
    """Return a score breakdown biggest points first (stored in the model's rule order)."""
    return sorted(breakdown, key=lambda part: (-abs(part["points"]), part["rule"]))
