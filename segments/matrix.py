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
import pyarrow as pa

from segments.compiler import trait_value
from segments.content import NEXT_CONTENT, ContentItem, next_content
from segments.personkey import all_keyed, id_order, in_id_order
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
# A matrix row's columns, in order.
COLUMNS = (
    "person_id",
    "tier",
    "stage",
    "stage_since",
    "fit_score",
    "activity_score",
    "score",
    "score_breakdown",
    "channels",
    "email",
    *PROFILE_TRAITS,
    "traits",
    "interests",
    "top_interest",
    "touchpoints_total",
    *(f"touchpoints_{n}d" for n in WINDOWS),
    "touchpoints_by_channel",
    "first_seen",
    "last_seen",
    "days_since_last_touch",
    "last_channel",
    *NEXT_CONTENT,
)
# How a row is made of its person's state: bumped when a column computed from the state
# alone changes (channels, profile traits, next content), so that an incremental build
# does not keep rows made the old way (it starts again from a full build).
ROWS_VERSION = 2
# What a later as-of time changes in a row of the same state (see refresh_matrix).
AS_OF_COLUMNS = (
    "stage",
    "stage_since",
    "activity_score",
    "score",
    "score_breakdown",
    *(f"touchpoints_{n}d" for n in WINDOWS),
    "days_since_last_touch",
)


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
    recorded = current_stages(history, as_of_ms)
    return finish_matrix(state, recorded, model, catalog, as_of_ms, keyed=all_keyed(persons))


def finish_matrix(
    state: pl.LazyFrame,
    recorded: pl.LazyFrame,
    model: ScoringModel,
    catalog: tuple[ContentItem, ...],
    as_of_ms: int,
    *,
    keyed: bool = False,
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Return the rows (by person_id) and new stage transitions of person states at
    ``as_of_ms``.

    ``recorded`` is ``segments.stages.current_stages`` of the stage history. ``keyed``
    says every person id is dmp's (``segments.personkey.all_keyed``): the rows are then
    sorted by the ids' keys, the same order at less cost (0.4 s of a 1M-person build).
    """
    rows = _at(state, recorded, model, as_of_ms).with_columns(
        _channels().alias("channels"),
        *(_trait(name) for name in PROFILE_TRAITS),
        pl.col("touchpoints_total").cast(pl.UInt32),
    )
    rows = rows.cache()  # read twice below: computed once
    seen = rows.select("person_id", page="seen_pages").explode("page").drop_nulls("page")
    content = next_content(rows.select("person_id", "stage", "top_interest"), seen, catalog)
    matrix = rows.join(content, on="person_id", how="left").select(COLUMNS)
    return matrix.sort(id_order(keyed)), stage_changes(rows)


class RowsMismatch(ValueError):
    """Rows that :func:`refresh_matrix` cannot refresh from the state given."""


def refresh_matrix(
    rows: pl.LazyFrame,
    state: pl.LazyFrame,
    recorded: pl.LazyFrame,
    model: ScoringModel,
    catalog: tuple[ContentItem, ...],
    as_of_ms: int,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return ``rows`` as of ``as_of_ms``, and the new stage transitions: the rows a
    build made of ``state`` (every person of ``rows``, whose state has not changed since)
    with the same scoring model and catalog, at an earlier as-of time.

    Only what the as-of time moves is computed again (:data:`AS_OF_COLUMNS`; the next
    content of those whose stage moved): the rest of a row depends on the state alone,
    and only the rest is read of ``rows`` (and the stage, to see who moved). An
    incremental build refreshes the rows of everyone it did not refold this way.
    """
    needed = ["person_id", "tier", "first_seen", "last_seen", "recent", "scale"]
    needed += [f"fit_{i}" for i in range(len(model.fit))]
    needed += [f"w_{i}" for i in range(len(model.activity))]
    if rows.collect_schema().names() != list(COLUMNS):
        raise RowsMismatch("the rows are not this version's matrix rows")
    # What the as-of time moves is not read, only replaced (the score breakdown, a list
    # of structs, is the dearest column to read): half the time of reading whole rows.
    rows = rows.select(c for c in COLUMNS if c not in AS_OF_COLUMNS or c == "stage").collect()
    # Read once (a state in parts is a scan that picks each person's newest), computed in
    # its order, then only the as-of columns put in the rows' order: sorting the state
    # first moved every person's recent times too (0.5 s at 1M).
    mine = state.select(*needed, "top_interest", "seen_pages").collect()
    moved = in_id_order(
        _at(mine.lazy().select(needed), recorded, model, as_of_ms)
        .select("person_id", *AS_OF_COLUMNS, "stage_changed")
        .collect()
    )
    if not moved["person_id"].equals(rows["person_id"]):
        raise RowsMismatch("the rows and the state hold different persons")
    fresh = rows.with_columns(moved.select(AS_OF_COLUMNS)).select(COLUMNS)
    stage_moved = moved["stage"] != rows["stage"]
    ask = mine.select("person_id", "top_interest", "seen_pages").join(
        moved.filter(stage_moved).select("person_id", "stage"), on="person_id"
    )
    if ask.height:
        seen = ask.lazy().select("person_id", page="seen_pages").explode("page").drop_nulls("page")
        content = next_content(
            ask.lazy().select("person_id", "stage", "top_interest"), seen, catalog
        )
        asked = (
            rows.lazy()
            .select("person_id")
            .join(content, on="person_id", how="left", maintain_order="left")
            .collect()
        )
        fresh = fresh.with_columns(
            pl.when(stage_moved).then(asked[name]).otherwise(pl.col(name)) for name in NEXT_CONTENT
        )
    return fresh, stage_changes(moved.lazy()).collect()


def _at(
    state: pl.LazyFrame, recorded: pl.LazyFrame, model: ScoringModel, as_of_ms: int
) -> pl.LazyFrame:
    """Return ``state`` with what the as-of time decides: scores, the score breakdown,
    the windowed counts and the stage (in ``state``'s order), its recent times dropped
    once counted."""
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
    # The recent times are done with once counted: not carried through the join.
    rows = (
        state.with_columns(*activity, *windows)
        .drop("recent")
        .join(recorded, on="person_id", how="left", maintain_order="left")
    )
    return apply_stage_rules(_add_scores(rows, model), model.stages, as_of_ms).with_columns(
        _days_since(as_of_ms)
    )


def _days_since(as_of_ms: int) -> pl.Expr:
    return ((as_of_ms - pl.col("last_seen")) / DAY_MS).round(2).alias("days_since_last_touch")


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
    breakdown = pl.struct(columns).map_batches(
        lambda batch: _breakdown(batch.struct.unnest(), names),
        return_dtype=pl.List(POINT),
        is_elementwise=True,  # row by row: the streaming engine hands it batches
    )
    return scored.with_columns(score_breakdown=breakdown).drop(columns)


def _breakdown(points: pl.DataFrame, names: list[str]) -> pl.Series:
    """Return each row's list of (rule, points) of its non-null ``points`` (one column a
    rule, named ``names``), in rule order, built as Arrow arrays: the points row by row
    (a gather from the columns one after another), the offsets from each row's count."""
    n, k = points.height, points.width
    flat = pl.concat([points.to_series(i) for i in range(k)], rechunk=True)
    at = pl.int_range(0, n * k, eager=True)  # row-major positions
    rule = at % k
    ordered = pl.DataFrame({"points": flat.gather(rule * n + at // k), "rule": rule})
    ordered = ordered.drop_nulls("points")
    counts = points.select(pl.sum_horizontal(pl.all().is_not_null()).cast(pl.Int64)).to_series()
    offsets = pl.concat([pl.Series([0], dtype=pl.Int64), counts.cum_sum()])
    parts = [
        pl.Series(names, dtype=pl.Utf8).gather(ordered["rule"]).to_arrow(),
        ordered["points"].round(2).to_arrow(),
    ]
    lists = pa.LargeListArray.from_arrays(
        offsets.to_arrow(), pa.StructArray.from_arrays(parts, names=["rule", "points"])
    )
    return pl.Series(lists).cast(pl.List(POINT))


def _channels() -> pl.Expr:
    """Where a person can be reached, with consent: retargeting, email, phone, postal."""
    consents, contact = pl.col("consents"), pl.col("contact")
    bounced = trait_value("email_status") == "bounced"
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
    return trait_value(name).alias(name)


def by_weight(breakdown: list[dict]) -> list[dict]:
    """Return a score breakdown biggest points first (stored in the model's rule order)."""
    return sorted(breakdown, key=lambda part: (-abs(part["points"]), part["rule"]))
