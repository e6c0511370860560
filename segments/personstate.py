"""Each person's as-of-independent state: what the matrix needs from their touchpoints.

A build first folds every person's profile and touchpoints (those up to ``upto_ms``)
into one row of state, then finishes the matrix from the state at its as-of time
(:mod:`segments.matrix`). Nothing in the state depends on the as-of time, so an
incremental build can keep the state of everyone untouched since the last build, refold
only the touched persons, and finish all rows exactly as a full build would.

Decaying sums are kept as weights ``w = Σ 2 ** (x - scale)``, ``x`` a touchpoint's time
in half-lives since ``ANCHOR_MS`` and ``scale`` (see :func:`decay_scale`) a whole multiple
of 256 half-lives at or after the newest time: then ``Σ points × 0.5 ** ((as_of - t) /
half_life) = points × w × 2 ** (scale - (as_of - ANCHOR_MS) / half_life)``, no weight
overflows, and the weights do not depend on the as-of time (only on ``scale``, which
changes once every 256 half-lives; an incremental build then folds everyone anew).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import polars as pl

from segments.compiler import compile_when
from segments.content import ContentItem, page_key
from segments.personkey import KEY, all_keyed, person_key
from segments.scoring import DAY_MS, ScoringModel

ANCHOR_MS = 1_577_836_800_000  # 2020-01-01T00:00Z, where decay exponents are counted from
WINDOWS = (7, 30, 90)  # the touchpoints_<n>d counts; ``recent`` keeps the longest


def decay_scale(model: ScoringModel, upto_ms: int) -> float:
    """Return the scale of the weights for touchpoints up to ``upto_ms`` (see above)."""
    half_lives = (upto_ms - ANCHOR_MS) / (DAY_MS * model.half_life_days)
    return 256.0 * math.ceil(half_lives / 256)


def person_state(
    persons: pl.LazyFrame,
    touchpoints: pl.LazyFrame,
    model: ScoringModel,
    catalog: tuple[ContentItem, ...],
    upto_ms: int,
    scale: float,
) -> pl.LazyFrame:
    """Return one state row per person of ``persons`` from their touchpoints to ``upto_ms``.

    The fold groups the touchpoints by person several times over (and by person and
    channel, topic or day). It does so by an integer key (:func:`_keyed`): a 16-character
    id hashes and compares out of line, and at 20M touchpoints that made the build a
    third slower. Touchpoints of persons not in ``persons`` drop out, as they did from
    the rows before.

    What the aggregations read of each touchpoint is kept in memory once (a cache): its
    key, time, channel (a category: the collectors set one of a handful of names),
    topics, and one flag per activity rule, each rule tested as the touchpoints stream
    in. The event names and URLs, the largest columns, are not kept, nor the decay
    weight: each aggregation that sums it computes it from the time again, cheaper than
    8 bytes a touchpoint. The pages seen come from a scan of their own, of the URLs that
    may hold a catalog page (a predicate the Parquet reader applies), whose few
    touchpoints alone are given their person's key. At 1M persons / 20M touchpoints
    that took a build from 31.8 s to 29.5 s and its peak memory from 4.5 to 3.7–3.9 GB
    (BENCHMARKS.md, "The fold keeps flags, not texts").
    """
    half_lives = (pl.col("timestamp") - ANCHOR_MS) / (DAY_MS * model.half_life_days)
    weight = pl.lit(2.0).pow(half_lives - scale)
    persons, keyed = _keyed(persons)
    key_type = persons.collect_schema()[KEY]
    until = touchpoints.filter(pl.col("timestamp") <= upto_ms)
    past = (
        keyed(until)
        .select(
            KEY,
            "timestamp",
            pl.col("channel").cast(pl.Categorical),
            "topics",
            **{_matches(i): compile_when(rule.when) for i, rule in enumerate(model.activity)},
        )
        .cache()
    )
    return (
        persons.with_columns(
            pl.when(compile_when(rule.when)).then(pl.lit(rule.points)).alias(f"fit_{i}")
            for i, rule in enumerate(model.fit)
        )
        .join(_per_person(past.with_columns(w=weight), model, upto_ms), on=KEY, how="left")
        .join(_capped_rules(past.with_columns(w=weight), model, key_type), on=KEY, how="left")
        .join(_channel_counts(past), on=KEY, how="left")
        .join(_interests(past.with_columns(w=weight)), on=KEY, how="left")
        .join(_seen_pages(until, keyed, catalog, key_type), on=KEY, how="left")
        .with_columns(
            pl.col("touchpoints_total").fill_null(0),
            first_seen=pl.min_horizontal("first_seen", "first_touch"),
            scale=pl.lit(scale),
        )
        .drop(KEY, "first_touch")
    )


def _keyed(
    persons: pl.LazyFrame,
) -> tuple[pl.LazyFrame, Callable[[pl.LazyFrame], pl.LazyFrame]]:
    """Return ``persons`` with their key (``KEY``), and what gives touchpoints theirs.

    dmp's person ids are keyed by their own number (``segments.personkey``): each
    touchpoint's id is parsed, no join; touchpoints whose ids have no key are dropped,
    and those of other dmp ids fall out where the aggregations are joined to ``persons``.
    Persons with ids of other shapes are numbered by their row instead (``KEY`` is then
    that number), which each touchpoint is joined to (one hash probe of its id): those of
    no person drop out there.
    """
    if all_keyed(persons):
        key = person_key(pl.col("person_id")).alias(KEY)
        return persons.with_columns(key), lambda frame: frame.with_columns(key).filter(
            pl.col(KEY).is_not_null()
        )
    numbered = persons.with_row_index(KEY).cache()  # numbered once: all uses agree
    keys = numbered.select("person_id", KEY)
    return numbered, lambda frame: frame.join(keys, on="person_id", how="inner")


def _matches(i: int) -> str:
    """Return the name of the flag: activity rule ``i`` holds for the touchpoint."""
    return f"m_{i}"


def sum_or_null(values: pl.Expr) -> pl.Expr:
    """Return the sum of the non-null values, null when there are none (a rule never met)."""
    return pl.when(values.count() > 0).then(values.sum())


def _per_person(past: pl.LazyFrame, model: ScoringModel, upto_ms: int) -> pl.LazyFrame:
    """One pass: counts, recency, recent times and every uncapped activity rule's weight.

    The recent times are gathered as they come and each person's list sorted after:
    sorting within the aggregation took longer (1.9 against 1.6 s at 20M touchpoints)."""
    ts = pl.col("timestamp")
    uncapped = [i for i, r in enumerate(model.activity) if r.max_per_day is None]
    rules = [pl.when(pl.col(_matches(i))).then(pl.col("w")).alias(f"w_{i}") for i in uncapped]
    oldest = upto_ms - max(WINDOWS) * DAY_MS
    return (
        past.with_columns(rules)
        .group_by(KEY)
        .agg(
            touchpoints_total=pl.len(),
            first_touch=ts.min(),
            last_seen=ts.max(),
            recent=ts.filter(ts > oldest),
            **{f"w_{i}": sum_or_null(pl.col(f"w_{i}")) for i in uncapped},
        )
        .with_columns(pl.col("recent").list.sort())
    )


def _capped_rules(past: pl.LazyFrame, model: ScoringModel, key_type: pl.DataType) -> pl.LazyFrame:
    """``w_<i>`` of the rules with ``max_per_day``: only each day's first matches count.

    A day's first matches are its smallest weights. Most person-days hold no more than
    the cap and count whole; only the others are looked at touchpoint by touchpoint.
    """
    out = pl.LazyFrame(schema={KEY: key_type})
    for i, rule in enumerate(model.activity):
        if rule.max_per_day is None:
            continue
        cap, keys = rule.max_per_day, [KEY, "day"]
        matches = past.filter(pl.col(_matches(i))).select(
            KEY, "w", day=pl.col("timestamp") // DAY_MS
        )
        days = matches.group_by(keys).agg(n=pl.len(), w=pl.col("w").sum())
        busy = (
            matches.join(days.filter(pl.col("n") > cap), on=keys, how="semi")
            .group_by(keys)
            .agg(pl.col("w").bottom_k(cap).sum())
        )
        both = pl.concat([days.filter(pl.col("n") <= cap).select(*keys, "w"), busy])
        folded = both.group_by(KEY).agg(pl.col("w").sum().alias(f"w_{i}"))
        out = out.join(folded, on=KEY, how="full", coalesce=True)
    return out


def _channel_counts(past: pl.LazyFrame) -> pl.LazyFrame:
    """Touchpoints by channel, and the channel of the last touchpoint (of several at the
    same time, the first by name, a missing channel before any): from each person's few
    channels and their last times, not per touchpoint (the channel at the latest time of
    20M took 1.6 s). ``segments.sqlmatrix`` breaks the ties so too."""
    return (
        past.group_by(KEY, "channel")
        .agg(count=pl.len(), last=pl.col("timestamp").max())
        .with_columns(pl.col("channel").cast(pl.Utf8))
        .sort(KEY, "channel")
        .group_by(KEY)
        .agg(
            touchpoints_by_channel=pl.struct("channel", "count"),
            last_channel=pl.col("channel").get(pl.col("last").arg_max()),
        )
    )


def _interests(past: pl.LazyFrame) -> pl.LazyFrame:
    """Topic weights decayed like activity, as shares (which no as-of time changes)."""
    weights = (
        past.filter(pl.col("topics").list.len() > 0)
        .select(KEY, "topics", "w")
        .explode("topics")
        .group_by(KEY, topic=pl.col("topics").cast(pl.Categorical))  # numbers, not texts
        .agg(weight=pl.col("w").sum())
        .with_columns(weight=(pl.col("weight") / pl.col("weight").sum().over(KEY)).round(4))
    )
    # One sort orders every person's list (largest share first, ties by topic: polars
    # sorts a categorical by its texts): a group keeps its rows in their order (polars'
    # group_by). Sorting within each group took 1-2 s longer at 20M touchpoints; the
    # topics grouped as a categorical 0.3 s less than as texts.
    topic = pl.col("topic").cast(pl.Utf8)
    return (
        weights.sort(KEY, "weight", "topic", descending=[False, True, False])
        .group_by(KEY)
        .agg(interests=pl.struct(topic, "weight"), top_interest=topic.first())
    )


def _seen_pages(
    touchpoints: pl.LazyFrame,
    keyed: Callable[[pl.LazyFrame], pl.LazyFrame],
    catalog: tuple[ContentItem, ...],
    key_type: pl.DataType,
) -> pl.LazyFrame:
    """Return ``person_key, seen_pages``: the catalog pages each person has been on.

    A page key is a lower-cased part of its URL, so only URLs that may hold one of the
    catalog's keys need the (costly) normalisation, and only their touchpoints are
    given their person's key (``keyed``).
    """
    pages = sorted({pl.select(page_key(pl.lit(item.url))).item() for item in catalog})
    if not pages:
        return pl.LazyFrame(schema={KEY: key_type, "seen_pages": pl.List(pl.Utf8)})
    url = pl.col("url")
    return (
        keyed(
            touchpoints.filter(_may_hold(url, pages))
            .select("person_id", page=page_key(url))
            .filter(pl.col("page").is_in(pages))
        )
        .group_by(KEY)
        .agg(seen_pages=pl.col("page").unique().sort())
    )


def _may_hold(url: pl.Expr, pages: list[str]) -> pl.Expr:
    """Return whether a URL may hold one of the (lower-case) page keys once lower-cased:
    an ASCII URL that holds one in any ASCII case, and any URL with other characters
    (whose lower case the page key then decides). Lower-casing every URL first, to look
    for the keys in that, cost a copy of each: 1.3 s of CPU over 20M URLs."""
    ascii_hit = url.str.contains_any(pages, ascii_case_insensitive=True)
    return ascii_hit | (url.str.len_bytes() != url.str.len_chars())
