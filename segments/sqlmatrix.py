"""The whole touchpoint matrix as one SQL query (:mod:`segments.sql`'s dialects).

It gives :func:`segments.matrix.build_matrix`'s rows and computes as polars does:
decaying sums as weights ``Σ 2 ** (x - scale)`` times ``2 ** (scale - age)``
(:mod:`segments.personstate`), a capped rule's sums per day first, rounding half to
even on Spark, so that both give the same numbers, not only nearly. The matrix
benchmark's DuckDB baseline and the Spark engine (``dmp.matrix.spark``) run it.
"""

from __future__ import annotations

from dmp.records import Stage, Tier
from segments.content import ContentItem
from segments.matrix import PROFILE_TRAITS, WINDOWS
from segments.personstate import ANCHOR_MS, decay_scale
from segments.scoring import DAY_MS, ScoringModel
from segments.sql import when_sql
from segments.sqldialect import DUCKDB, Dialect, Engine

STAGE_CHANGED = "stage_changed"  # with ``changes``: the model moved the person now


def matrix_sql(
    model: ScoringModel,
    catalog: tuple[ContentItem, ...],
    as_of_ms: int,
    *,
    persons: str,
    touchpoints: str,
    history: str,
    dialect: Dialect = DUCKDB,
    changes: bool = False,
) -> str:
    """Return one query giving :func:`segments.matrix.build_matrix`'s rows.

    ``persons``, ``touchpoints`` and ``history`` are SQL table expressions with the
    matrix's input schemas (``segments.matrix``): touchpoints with ms timestamps and
    merges applied. With ``changes``, a last column ``stage_changed`` marks the rows
    whose stage the model set at ``as_of_ms`` (``segments.stages.stage_changes``).
    """
    d, day = dialect, DAY_MS
    ts, at = d.ident("timestamp"), d.ident("at")
    scale = decay_scale(model, as_of_ms)
    half = d.double(DAY_MS * model.half_life_days)
    # w: a touchpoint's weight; times ``factor`` it is its decayed point (personstate).
    weight = f"pow(2.0, ({ts} - {ANCHOR_MS}) / {half} - {d.double(scale)})"
    ages = (as_of_ms - ANCHOR_MS) / (DAY_MS * model.half_life_days)
    factor = f"pow(2.0, {d.double(scale)} - {d.double(ages)})"
    fit = [
        f"SELECT person_id, 'fit' AS kind, {d.quote(r.name)} AS rule, "
        f"{d.double(r.points)} AS points, {i} AS ord FROM persons WHERE {when_sql(r.when, d)}"
        for i, r in enumerate(model.fit)
    ]
    activity = []
    for i, r in enumerate(model.activity, start=len(model.fit)):
        rows = f"SELECT person_id, ts, w FROM tp WHERE {when_sql(r.when, d)}"
        if r.max_per_day is not None:  # each day's first matches, summed per day first
            rows = (
                f"SELECT person_id, sum(w) AS w FROM (SELECT person_id, w, row_number() OVER "
                f"(PARTITION BY person_id, {d.int_div.format('ts', day)} ORDER BY ts) AS n, "
                f"{d.int_div.format('ts', day)} AS day FROM ({rows})) "
                f"WHERE n <= {r.max_per_day} GROUP BY person_id, day"
            )
        activity.append(
            f"SELECT person_id, 'activity' AS kind, {d.quote(r.name)} AS rule, "
            f"({d.double(r.points)} * sum(w)) * {factor} AS points, {i} AS ord "
            f"FROM ({rows}) GROUP BY person_id"
        )
    points = " UNION ALL ".join(fit + activity) or (
        "SELECT CAST(NULL AS STRING) AS person_id, '' AS kind, '' AS rule, 0.0 AS points, "
        "0 AS ord WHERE FALSE"
    )
    windows = ", ".join(
        f"count(*) FILTER (WHERE ts > {as_of_ms - n * day}) AS touchpoints_{n}d" for n in WINDOWS
    )
    q = d.quote
    items = [
        f"({rank}, {q(it.id)}, {q(it.title)}, {q(it.url)}, {q(stage)}, "
        f"{q(topic) if topic else 'CAST(NULL AS STRING)'})"
        for rank, it in enumerate(catalog)
        for stage in it.stages
        for topic in (it.topics or (None,))
    ]
    catalog_rows = (
        "SELECT * FROM (VALUES " + ", ".join(items) + ") AS c(rank, id, title, url, stage, topic)"
        if items
        else "SELECT 0 AS rank, '' AS id, '' AS title, '' AS url, '' AS stage, '' AS topic "
        "WHERE FALSE"
    )
    rules = model.stages
    ranks = " ".join(f"WHEN '{t.value}' THEN {t.rank}" for t in Tier)
    sales = ", ".join(q(s.value) for s in Stage if s.set_by_sales)
    traits = ", ".join(f"{d.json_text.format('traits', name)} AS {name}" for name in PROFILE_TRAITS)
    counts = ", ".join(f"coalesce(touchpoints_{n}d, 0) AS touchpoints_{n}d" for n in WINDOWS)
    count = "CAST(count(*) AS UINTEGER)" if d.engine is Engine.DUCKDB else "count(*)"
    breakdown = d.ordered_list({"rule": "rule", "points": d.round.format("points", 2)}, ["ord"])
    interests = d.ordered_list(
        {"topic": "topic", "weight": "weight"}, ["weight", "topic"], frozenset({0})
    )
    page = (
        "lower(regexp_replace(regexp_replace(regexp_replace({0}, "
        + q("^[A-Za-z][A-Za-z0-9+.\\-]*://")
        + ", ''), '[?#].*$', ''), '/+$', ''))"
    )
    email_ok = d.list_contains.format("consents", "'email'")
    items = f"""
    CASE WHEN {d.list_contains.format("consents", "'ads'")} THEN 'retargeting' END,
    CASE WHEN email IS NOT NULL AND {email_ok}
         AND coalesce({d.json_text.format("traits", "email_status")} <> 'bounced', TRUE)
      THEN 'email' END,
    CASE WHEN {d.list_contains.format("contact", "'phone'")} THEN 'phone' END,
    CASE WHEN {d.list_contains.format("contact", "'address'")} THEN 'postal' END
  """
    channels = d.list_filter.format(d.list_of.format(items), "x", "x IS NOT NULL")
    r2 = d.round
    changed = f", stage <> coalesce(recorded_stage, 'lead') AS {STAGE_CHANGED}" if changes else ""
    # The channel of the latest touchpoint; of several at once the first by name (a
    # missing channel before any), as segments.personstate breaks the ties.
    last_channel = (
        "first(channel ORDER BY ts DESC, channel ASC NULLS FIRST)"
        if d.engine is Engine.DUCKDB
        else "min_by(channel, struct(-ts, channel))"
    )
    return f"""
WITH
persons AS (SELECT * FROM {persons}),
tp AS (
  SELECT person_id, {ts} AS ts, event, type, source, channel, site_id, url,
         title, topics, properties, {weight} AS w
  FROM {touchpoints}
  WHERE person_id IS NOT NULL AND {ts} <= {as_of_ms}
),
points AS ({points}),
scores AS (
  SELECT person_id,
         {r2.format("coalesce(sum(points) FILTER (WHERE kind = 'fit'), 0)", 2)} AS fit_score,
         {r2.format("coalesce(sum(points) FILTER (WHERE kind = 'activity'), 0)", 2)}
           AS activity_score,
         {breakdown} AS score_breakdown
  FROM points GROUP BY person_id
),
counts AS (
  SELECT person_id, count(*) AS touchpoints_total, {windows},
         min(ts) AS first_touch, max(ts) AS last_seen,
         {last_channel} AS last_channel
  FROM tp GROUP BY person_id
),
by_channel AS (
  SELECT person_id,
         {d.ordered_list({"channel": "channel", "count": "n"}, ["channel"])}
           AS touchpoints_by_channel
  FROM (SELECT person_id, channel, {count} AS n FROM tp GROUP BY person_id, channel)
  GROUP BY person_id
),
topic_weights AS (
  SELECT person_id, topic, {r2.format("w / sum(w) OVER (PARTITION BY person_id)", 4)} AS weight
  FROM (
    SELECT person_id, topic, sum(w) AS w
    FROM (SELECT person_id, w, {d.explode.format("topics")} AS topic
          FROM tp WHERE {d.size.format("topics")} > 0)
    GROUP BY person_id, topic
  )
),
interests AS (
  SELECT person_id, {interests} AS interests,
         {d.first_by("topic", ["weight", "topic"], frozenset({0}))} AS top_interest
  FROM topic_weights GROUP BY person_id
),
recorded AS (
  SELECT person_id, {d.first_by("stage", [at, "stage"], last=True)} AS recorded_stage,
         {d.first_by(at, [at, "stage"], last=True)} AS recorded_since
  FROM {history} WHERE {at} <= {as_of_ms} GROUP BY person_id
),
joined AS (
  SELECT p.person_id, p.tier, p.email, p.contact, p.consents, p.traits,
         least(p.first_seen, c.first_touch) AS first_seen,
         coalesce(s.fit_score, 0.0) AS fit_score,
         coalesce(s.activity_score, 0.0) AS activity_score,
         {r2.format("coalesce(s.fit_score, 0.0) + coalesce(s.activity_score, 0.0)", 2)} AS score,
         coalesce(s.score_breakdown, {d.empty_list}) AS score_breakdown,
         coalesce(c.touchpoints_total, 0) AS touchpoints_total, {counts},
         b.touchpoints_by_channel, c.last_seen, c.last_channel,
         i.interests, i.top_interest, r.recorded_stage, r.recorded_since
  FROM persons p
  LEFT JOIN scores s USING (person_id)
  LEFT JOIN counts c USING (person_id)
  LEFT JOIN by_channel b USING (person_id)
  LEFT JOIN interests i USING (person_id)
  LEFT JOIN recorded r USING (person_id)
),
flags AS (
  SELECT *,
    (score >= {rules.mql_score_gte!r}
     AND (CASE tier {ranks} ELSE 0 END) >= {rules.mql_tier_gte.rank}) AS qualifies
  FROM joined
),
staged AS (
  SELECT *,
    CASE
      WHEN recorded_stage IN ({sales}) THEN recorded_stage
      WHEN qualifies AND coalesce(recorded_stage <> 'mql', TRUE) THEN 'mql'
      WHEN recorded_stage = 'mql' AND NOT qualifies
           AND ({as_of_ms} - coalesce(last_seen, first_seen)) / {day}
               >= {rules.recycle_after_days!r}
        THEN 'recycled'
      ELSE coalesce(recorded_stage, 'lead')
    END AS stage
  FROM flags
),
final AS (
  SELECT *,
    CASE WHEN stage <> coalesce(recorded_stage, 'lead') THEN {as_of_ms}
         ELSE coalesce(recorded_since, first_seen) END AS stage_since
  FROM staged
),
catalog AS ({catalog_rows}),
seen AS (
  SELECT DISTINCT person_id, {page.format("url")} AS page FROM tp WHERE url IS NOT NULL
),
candidates AS (
  SELECT r.person_id, 0 AS fit, c.* FROM final r
    JOIN catalog c ON c.topic IS NOT NULL AND c.stage = r.stage AND c.topic = r.top_interest
  UNION ALL
  SELECT r.person_id, 1 AS fit, c.* FROM final r
    JOIN catalog c ON c.topic IS NULL AND c.stage = r.stage
),
picked AS (
  SELECT person_id,
         {d.first_by("id", ["fit", "rank"])} AS next_content,
         {d.first_by("title", ["fit", "rank"])} AS next_content_title,
         {d.first_by("url", ["fit", "rank"])} AS next_content_url
  FROM candidates k
  WHERE NOT EXISTS (
    SELECT 1 FROM seen s WHERE s.person_id = k.person_id AND s.page = {page.format("k.url")}
  )
  GROUP BY person_id
)
SELECT r.person_id, tier, stage, stage_since, fit_score, activity_score, score, score_breakdown,
  {channels} AS channels,
  email, {traits}, traits, interests, top_interest, touchpoints_total,
  {", ".join(f"touchpoints_{n}d" for n in WINDOWS)}, touchpoints_by_channel, first_seen,
  last_seen, {r2.format(f"({as_of_ms} - last_seen) / {day}", 2)} AS days_since_last_touch,
  last_channel, next_content, next_content_title, next_content_url{changed}
FROM final r LEFT JOIN picked USING (person_id)
ORDER BY r.person_id
"""
