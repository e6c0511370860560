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

from segments.compiler import compile_when
from segments.content import ContentItem, next_content, page_key
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
    decay = 0.5 ** ((as_of_ms - pl.col("timestamp")) / (DAY_MS * model.half_life_days))
    past = touchpoints.filter(pl.col("timestamp") <= as_of_ms).with_columns(decay=decay).cache()
    rows = (
        _fit(persons, model)
        .join(_per_person(past, model, as_of_ms), on="person_id", how="left")
        .join(_capped_rules(past, model), on="person_id", how="left")
        .join(_channel_counts(past), on="person_id", how="left")
        .join(_interests(past), on="person_id", how="left")
        .join(current_stages(history, as_of_ms), on="person_id", how="left")
        .with_columns(
            pl.col(*(f"touchpoints_{n}d" for n in WINDOWS), "touchpoints_total").fill_null(0),
            first_seen=pl.min_horizontal("first_seen", "first_touch"),
        )
        .cache()  # read twice below: computed once
    )
    rows = apply_stage_rules(_add_scores(rows, model), model.stages, as_of_ms).cache()
    seen = _seen_pages(past, catalog)
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


def _fit(persons: pl.LazyFrame, model: ScoringModel) -> pl.LazyFrame:
    """Add ``fit_<i>``: each fit rule's points, null where the person does not meet it."""
    return persons.with_columns(
        pl.when(compile_when(rule.when)).then(pl.lit(rule.points)).alias(f"fit_{i}")
        for i, rule in enumerate(model.fit)
    )


def _per_person(past: pl.LazyFrame, model: ScoringModel, as_of_ms: int) -> pl.LazyFrame:
    """One pass over the touchpoints: counts, recency and every uncapped activity rule.

    Rule ``i`` gives ``act_<i>``, its decayed points, null where no touchpoint met it.
    """
    ts = pl.col("timestamp")
    rules = [
        pl.when(compile_when(r.when)).then(r.points * pl.col("decay")).alias(f"act_{i}")
        for i, r in enumerate(model.activity)
        if r.max_per_day is None
    ]
    names = [f"act_{i}" for i, r in enumerate(model.activity) if r.max_per_day is None]
    return (
        past.with_columns(rules)
        .group_by("person_id")
        .agg(
            touchpoints_total=pl.len(),
            **{f"touchpoints_{n}d": (ts > as_of_ms - n * DAY_MS).sum() for n in WINDOWS},
            first_touch=ts.min(),
            last_seen=ts.max(),
            last_channel=pl.col("channel").get(ts.arg_max()),
            **{name: _sum_or_null(pl.col(name)) for name in names},
        )
    )


def _capped_rules(past: pl.LazyFrame, model: ScoringModel) -> pl.LazyFrame:
    """``act_<i>`` of the rules with ``max_per_day``: only each day's first matches count.

    Decay grows with time, so a day's first ``k`` matches are its ``k`` smallest decays.
    Most person-days hold no more than ``k`` matches and count whole; only the others
    are looked at touchpoint by touchpoint.
    """
    out = pl.LazyFrame(schema={"person_id": pl.Utf8})
    for i, rule in enumerate(model.activity):
        if rule.max_per_day is None:
            continue
        cap, keys = rule.max_per_day, ["person_id", "day"]
        matches = past.filter(compile_when(rule.when)).select(
            "person_id", "decay", day=pl.col("timestamp") // DAY_MS
        )
        days = matches.group_by(keys).agg(n=pl.len(), decay=pl.col("decay").sum())
        busy = matches.join(days.filter(pl.col("n") > cap), on=keys, how="semi")
        firsts = busy.group_by(keys).agg(pl.col("decay").bottom_k(cap).sum())
        both = pl.concat([days.filter(pl.col("n") <= cap).select(keys + ["decay"]), firsts])
        points = both.group_by("person_id").agg(
            (rule.points * pl.col("decay").sum()).alias(f"act_{i}")
        )
        out = out.join(points, on="person_id", how="full", coalesce=True)
    return out


def _sum_or_null(values: pl.Expr) -> pl.Expr:
    """Sum of the non-null values, null when there are none (the rule never applied)."""
    return pl.when(values.count() > 0).then(values.sum())


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


def _channel_counts(past: pl.LazyFrame) -> pl.LazyFrame:
    return (
        past.group_by("person_id", "channel")
        .agg(count=pl.len())
        .sort("person_id", "channel")
        .group_by("person_id")
        .agg(touchpoints_by_channel=pl.struct("channel", "count"))
    )


def _interests(past: pl.LazyFrame) -> pl.LazyFrame:
    """Topic weights decayed like activity, as shares of the person's whole topic weight."""
    weights = (
        past.filter(pl.col("topics").list.len() > 0)
        .select("person_id", "topics", weight="decay")
        .explode("topics")
        .group_by("person_id", topic="topics")
        .agg(pl.col("weight").sum())
        .with_columns(weight=(pl.col("weight") / pl.col("weight").sum().over("person_id")).round(4))
    )
    order = {"descending": [True, False]}
    return weights.group_by("person_id").agg(
        interests=pl.struct("topic", "weight").sort_by("weight", "topic", **order),
        top_interest=pl.col("topic").sort_by("weight", "topic", **order).first(),
    )


def _seen_pages(past: pl.LazyFrame, catalog: tuple[ContentItem, ...]) -> pl.LazyFrame:
    """Return ``person_id, page`` of touchpoints at a catalog item's page.

    A page key is a lower-cased part of its URL, so only URLs holding one of the
    catalog's keys need the (costly) normalisation.
    """
    pages = sorted({_page(item.url) for item in catalog})
    if not pages:
        return pl.LazyFrame(schema={"person_id": pl.Utf8, "page": pl.Utf8})
    url = pl.col("url")
    return past.filter(url.str.to_lowercase().str.contains_any(pages)).select(
        "person_id", page=page_key(url)
    )


def _page(url: str) -> str:
    return pl.select(page_key(pl.lit(url))).item()


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
