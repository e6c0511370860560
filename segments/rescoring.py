"""Rescoring: the scores and stages another model would give the persons of a build.

A build keeps each person's state (:mod:`segments.personstate`): their profile, a column
``fit_<i>`` per fit rule (its points, null where it did not hold) and a decaying weight
``w_<i>`` per activity rule. A rule of the new model whose condition (and daily cap) the
built model had already takes its column from the state: new points and thresholds cost
only arithmetic. A new fit condition is evaluated on the state's profile columns; a new
activity condition, or a new half-life, needs the touchpoints (:func:`needs_touchpoints`).

Scores are banded by the built model's MQL threshold (see :func:`band_edges`), so that
both sides of a comparison are measured with the same bands.
"""

from __future__ import annotations

import polars as pl

from segments.compiler import compile_when
from segments.matrix import PERSON_SCHEMA
from segments.personstate import ANCHOR_MS, person_state
from segments.scoring import DAY_MS, Rule, ScoringModel
from segments.stages import apply_stage_rules

# Bands as fractions of the MQL threshold: below 0, 0 to half, half to it, up to twice it,
# twice it and more.
BAND_FRACTIONS = (0.0, 0.5, 1.0, 2.0)


def band_edges(model: ScoringModel) -> tuple[float, ...]:
    """Return the lower edges of the score bands above the lowest, from ``model``'s MQL
    threshold (60 gives 0, 30, 60, 120)."""
    threshold = model.stages.mql_score_gte
    return tuple(round(threshold * f, 2) for f in BAND_FRACTIONS)


def band_of(score: pl.Expr, edges: tuple[float, ...]) -> pl.Expr:
    """Return the index of the band a score falls in (0: below the first edge)."""
    band = pl.lit(0, dtype=pl.Int8)
    for i, edge in enumerate(edges, start=1):
        band = pl.when(score >= edge).then(pl.lit(i, dtype=pl.Int8)).otherwise(band)
    return band


def needs_touchpoints(built: ScoringModel, new: ScoringModel) -> bool:
    """Return whether rescoring with ``new`` needs the touchpoints (a new activity
    condition or half-life), not only the state of a build with ``built``."""
    if built.half_life_days != new.half_life_days:
        return True
    return any(_same_activity(built, rule) is None for rule in new.activity)


def rescore(
    state: pl.LazyFrame,
    recorded: pl.LazyFrame,
    built: ScoringModel,
    new: ScoringModel,
    as_of_ms: int,
    touchpoints: pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """Return ``person_id, score, stage`` as ``new`` would make them at ``as_of_ms``.

    ``state`` is a build's person state (made with ``built``), ``recorded`` the
    ``segments.stages.current_stages`` of its stage history; ``touchpoints`` (those the
    build read) are needed when :func:`needs_touchpoints` says so.
    """
    if needs_touchpoints(built, new):
        if touchpoints is None:
            raise ValueError("this model has new activity conditions: touchpoints needed")
        persons = state.select(list(PERSON_SCHEMA))
        scale = state.select(pl.col("scale").first()).collect().item()
        state = person_state(persons, touchpoints, new, (), as_of_ms, scale)
        fit = [pl.col(f"fit_{i}") for i in range(len(new.fit))]
        weights = [pl.col(f"w_{i}") for i in range(len(new.activity))]
    else:
        fit = [_fit_points(built, rule) for rule in new.fit]
        weights = [pl.col(f"w_{_same_activity(built, rule)}") for rule in new.activity]
    ages = (as_of_ms - ANCHOR_MS) / (DAY_MS * new.half_life_days)
    decay = pl.lit(2.0).pow(pl.col("scale") - ages)
    activity = [rule.points * w * decay for rule, w in zip(new.activity, weights, strict=True)]
    fit_score = pl.sum_horizontal(pl.lit(0.0), *fit).round(2)
    act_score = pl.sum_horizontal(pl.lit(0.0), *activity).round(2)
    rows = state.select(
        "person_id",
        "tier",
        "first_seen",
        "last_seen",
        score=(fit_score + act_score).round(2),
    ).join(recorded, on="person_id", how="left")
    staged = apply_stage_rules(rows, new.stages, as_of_ms)
    return staged.select("person_id", "score", "stage")


def _fit_points(built: ScoringModel, rule: Rule) -> pl.Expr:
    """Return a new fit rule's points: from the built model's column for the same
    condition, else its condition evaluated anew."""
    for i, old in enumerate(built.fit):
        if old.when == rule.when:
            return pl.when(pl.col(f"fit_{i}").is_not_null()).then(pl.lit(rule.points))
    return pl.when(compile_when(rule.when)).then(pl.lit(rule.points))


def _same_activity(built: ScoringModel, rule: Rule) -> int | None:
    """Return the index of the built model's activity rule with ``rule``'s condition and
    cap (its weight column is ``rule``'s too), or None."""
    for i, old in enumerate(built.activity):
        if old.when == rule.when and old.max_per_day == rule.max_per_day:
            return i
    return None
