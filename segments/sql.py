"""Rules (:mod:`segments.rules`) compiled to SQL: the second backend beside polars.

It speaks DuckDB's dialect (``json_extract_string``, ``regexp_matches`` with RE2 syntax,
list functions) over the same frame convention as :mod:`segments.compiler`, and gives
the same answers: a condition on something missing is false, ``exists: false`` aside.
The matrix benchmark's DuckDB baseline is built from it.
"""

from __future__ import annotations

from collections.abc import Mapping

from dmp.records import Stage, Tier
from segments.compiler import COLUMN
from segments.content import ContentItem
from segments.evaluator import all_dids, did_key
from segments.language import (
    NUMBER_FIELDS,
    ORDERED,
    All,
    AnyOf,
    Compare,
    Did,
    Interest,
    Node,
    Not,
    Reachable,
    TraitTest,
)
from segments.matrix import PROFILE_TRAITS, WINDOWS
from segments.rules import LIST_OPS, NUMERIC_OPS, Attr, Condition, Op, When
from segments.scoring import DAY_MS, ScoringModel


def when_sql(when: When) -> str:
    """Return a SQL Boolean expression (never NULL) for all of ``when``'s conditions."""
    parts = [condition_sql(c) for c in when.conditions]
    return " AND ".join(parts) if parts else "TRUE"


def condition_sql(c: Condition) -> str:
    """Return a SQL Boolean expression (never NULL) for one condition."""
    if c.attr is Attr.TOPIC:
        return f"COALESCE({_topics(c)}, FALSE)"
    if c.attr is Attr.TRAIT:
        value = f"json_extract_string(traits, {quote('$.' + _json_key(c.name))})"
    elif c.attr is Attr.PROPERTY:
        value = f"json_extract_string(properties, {quote('$.' + _json_key(c.name))})"
    else:
        value = COLUMN[c.attr]
    default = "TRUE" if c.op is Op.EXISTS and not c.value else "FALSE"
    return f"COALESCE({_compare(value, c.op, c.value)}, {default})"


def _compare(value: str, op: Op, target: object, *, text: bool = True) -> str:
    """``value op target`` in SQL, as :func:`segments.compiler.compare` (NULL where the
    value is missing); ``text``: the value is text, read as a number with
    :func:`number_sql`."""
    if op is Op.EXISTS:
        present = f"({value} IS NOT NULL AND {value} <> '')"
        return present if target else f"NOT {present}"
    number = number_sql(value) if text else value
    if op in NUMERIC_OPS:
        sign = {Op.GT: ">", Op.GTE: ">=", Op.LT: "<", Op.LTE: "<="}[op]
        return f"({number} {sign} {float(target)!r})"  # type: ignore[arg-type]
    if op in LIST_OPS or (op in (Op.EQ, Op.NE) and _is_number(target)):
        items = target if op in LIST_OPS else [target]
        assert isinstance(items, list)
        numbers = ", ".join(repr(float(t)) for t in items if _is_number(t))
        texts = ", ".join(quote(t) for t in items if not _is_number(t))
        parts = ["FALSE"]
        if numbers:
            parts.append(f"COALESCE({number} IN ({numbers}), FALSE)")
        if texts:
            parts.append(f"{value} IN ({texts})")
        found = f"(CASE WHEN {value} IS NULL THEN NULL ELSE {' OR '.join(parts)} END)"
        return found if op in (Op.IN, Op.EQ) else f"(NOT {found})"
    if op is Op.CONTAINS:
        return f"contains({value}, {quote(str(target))})"
    if op is Op.MATCHES:
        return f"regexp_matches({value}, {quote(str(target))})"
    sign = "=" if op is Op.EQ else "<>"
    return f"({value} {sign} {quote(str(target))})"


def number_sql(value: str) -> str:
    """Return text read as a number as :func:`segments.compiler.as_number` reads it: NULL
    for NaN, and for what DuckDB reads and polars does not (spaces around, ``1_000``)."""
    cast = f"NULLIF(TRY_CAST({value} AS DOUBLE), 'NaN'::DOUBLE)"
    return f"(CASE WHEN regexp_matches({value}, '[ \\t\\n\\v\\f\\r_]') THEN NULL ELSE {cast} END)"


def _topics(c: Condition) -> str:
    if c.op is Op.EXISTS:
        has = "(len(topics) > 0)"
        return has if c.value else f"NOT {has}"
    negate = c.op in (Op.NE, Op.NOT_IN)
    op = {Op.NE: Op.EQ, Op.NOT_IN: Op.IN}.get(c.op, c.op)
    hit = f"(len(list_filter(topics, lambda t: {_compare('t', op, c.value)})) > 0)"
    return f"(NOT {hit})" if negate else hit


def quote(text: str) -> str:
    """Return a SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _json_key(name: str) -> str:
    return '"' + name + '"'  # rule names are [A-Za-z0-9_.-]: nothing to escape


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def matrix_sql(
    model: ScoringModel,
    catalog: tuple[ContentItem, ...],
    as_of_ms: int,
    *,
    persons: str,
    touchpoints: str,
    history: str,
) -> str:
    """Return one DuckDB query giving :func:`segments.matrix.build_matrix`'s rows.

    ``persons``, ``touchpoints`` and ``history`` are SQL table expressions with the
    matrix's input schemas (``segments.matrix``): touchpoints with ms timestamps and
    merges applied.
    """
    day, half = DAY_MS, DAY_MS * model.half_life_days
    decay = f"pow(0.5, ({as_of_ms} - ts) / {half!r})"
    fit = [
        f"SELECT person_id, 'fit' AS kind, {quote(r.name)} AS rule, {r.points!r} AS points, "
        f"{i} AS ord FROM persons WHERE {when_sql(r.when)}"
        for i, r in enumerate(model.fit)
    ]
    activity = []
    for i, r in enumerate(model.activity, start=len(model.fit)):
        rows = f"SELECT person_id, ts FROM tp WHERE {when_sql(r.when)}"
        if r.max_per_day is not None:
            rows = (
                f"SELECT person_id, ts FROM (SELECT person_id, ts, row_number() OVER "
                f"(PARTITION BY person_id, ts // {day} ORDER BY ts) AS n FROM ({rows})) "
                f"WHERE n <= {r.max_per_day}"
            )
        activity.append(
            f"SELECT person_id, 'activity' AS kind, {quote(r.name)} AS rule, "
            f"sum({r.points!r} * {decay}) AS points, {i} AS ord FROM ({rows}) GROUP BY person_id"
        )
    points = " UNION ALL ".join(fit + activity) or (
        "SELECT NULL::VARCHAR AS person_id, '' AS kind, '' AS rule, 0.0 AS points, 0 AS ord "
        "WHERE FALSE"
    )
    windows = ", ".join(
        f"count(*) FILTER (WHERE ts > {as_of_ms - n * day}) AS touchpoints_{n}d" for n in WINDOWS
    )
    items = [
        f"({rank}, {quote(it.id)}, {quote(it.title)}, {quote(it.url)}, {quote(stage)}, "
        f"{quote(topic) if topic else 'NULL'})"
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
    sales = ", ".join(quote(s.value) for s in Stage if s.set_by_sales)
    traits = ", ".join(
        f"json_extract_string(traits, '$.\"{name}\"') AS {name}" for name in PROFILE_TRAITS
    )
    counts = ", ".join(f"coalesce(touchpoints_{n}d, 0) AS touchpoints_{n}d" for n in WINDOWS)
    return f"""
WITH
persons AS (SELECT * FROM {persons}),
tp AS (
  SELECT person_id, "timestamp" AS ts, event, type, source, channel, site_id, url,
         title, topics, properties
  FROM {touchpoints}
  WHERE person_id IS NOT NULL AND "timestamp" <= {as_of_ms}
),
points AS ({points}),
scores AS (
  SELECT person_id,
         round(coalesce(sum(points) FILTER (WHERE kind = 'fit'), 0), 2) AS fit_score,
         round(coalesce(sum(points) FILTER (WHERE kind = 'activity'), 0), 2) AS activity_score,
         list({{'rule': rule, 'points': round(points, 2)}} ORDER BY ord) AS score_breakdown
  FROM points GROUP BY person_id
),
counts AS (
  SELECT person_id, count(*) AS touchpoints_total, {windows},
         min(ts) AS first_touch, max(ts) AS last_seen,
         arg_max(channel, ts) AS last_channel
  FROM tp GROUP BY person_id
),
by_channel AS (
  SELECT person_id,
         list({{'channel': channel, 'count': n}} ORDER BY channel) AS touchpoints_by_channel
  FROM (SELECT person_id, channel, count(*)::UINTEGER AS n FROM tp GROUP BY ALL)
  GROUP BY person_id
),
topic_weights AS (
  SELECT person_id, topic, round(w / sum(w) OVER (PARTITION BY person_id), 4) AS weight
  FROM (
    SELECT person_id, topic, sum({decay}) AS w
    FROM (SELECT person_id, ts, unnest(topics) AS topic FROM tp WHERE len(topics) > 0)
    GROUP BY ALL
  )
),
interests AS (
  SELECT person_id,
         list({{'topic': topic, 'weight': weight}} ORDER BY weight DESC, topic) AS interests,
         first(topic ORDER BY weight DESC, topic) AS top_interest
  FROM topic_weights GROUP BY person_id
),
recorded AS (
  SELECT person_id, last(stage ORDER BY "at", stage) AS recorded_stage,
         last("at" ORDER BY "at", stage) AS recorded_since
  FROM {history} WHERE "at" <= {as_of_ms} GROUP BY person_id
),
joined AS (
  SELECT p.person_id, p.tier, p.email, p.contact, p.consents, p.traits,
         least(p.first_seen, c.first_touch) AS first_seen,
         coalesce(s.fit_score, 0.0) AS fit_score,
         coalesce(s.activity_score, 0.0) AS activity_score,
         round(coalesce(s.fit_score, 0.0) + coalesce(s.activity_score, 0.0), 2) AS score,
         coalesce(s.score_breakdown, []) AS score_breakdown,
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
  SELECT DISTINCT person_id,
    lower(regexp_replace(regexp_replace(regexp_replace(url,
      '^[A-Za-z][A-Za-z0-9+.\\-]*://', ''), '[?#].*$', ''), '/+$', '')) AS page
  FROM tp WHERE url IS NOT NULL
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
         first(id ORDER BY fit, rank) AS next_content,
         first(title ORDER BY fit, rank) AS next_content_title,
         first(url ORDER BY fit, rank) AS next_content_url
  FROM candidates k
  WHERE NOT EXISTS (
    SELECT 1 FROM seen s WHERE s.person_id = k.person_id AND s.page =
      lower(regexp_replace(regexp_replace(regexp_replace(k.url,
        '^[A-Za-z][A-Za-z0-9+.\\-]*://', ''), '[?#].*$', ''), '/+$', ''))
  )
  GROUP BY person_id
)
SELECT r.person_id, tier, stage, stage_since, fit_score, activity_score, score, score_breakdown,
  list_filter([
    CASE WHEN list_contains(consents, 'ads') THEN 'retargeting' END,
    CASE WHEN email IS NOT NULL AND list_contains(consents, 'email')
         AND coalesce(json_extract_string(traits, '$."email_status"') <> 'bounced', TRUE)
      THEN 'email' END,
    CASE WHEN list_contains(contact, 'phone') THEN 'phone' END,
    CASE WHEN list_contains(contact, 'address') THEN 'postal' END
  ], lambda x: x IS NOT NULL) AS channels,
  email, {traits}, traits, interests, top_interest, touchpoints_total,
  {", ".join(f"touchpoints_{n}d" for n in WINDOWS)}, touchpoints_by_channel, first_seen,
  last_seen, round(({as_of_ms} - last_seen) / {day}, 2) AS days_since_last_touch, last_channel,
  next_content, next_content_title, next_content_url
FROM final r LEFT JOIN picked USING (person_id)
ORDER BY r.person_id
"""


def segments_sql(
    segments: Mapping[str, Node], as_of_ms: int, *, matrix: str, touchpoints: str
) -> str:
    """Return one DuckDB query giving :func:`segments.evaluator.evaluate`'s table:
    ``person_id`` and one Boolean column per segment.

    ``matrix`` is a table expression with the matrix's rows, ``touchpoints`` one with
    :data:`segments.matrix.TOUCHPOINT_SCHEMA` (ms timestamps, merges applied).
    """
    dids = all_dids(segments)
    ctes = [f"tp AS (SELECT * FROM {touchpoints} WHERE timestamp <= {as_of_ms})"]
    joins = []
    plain = [d for d in dids if d.then is None]
    if plain:
        sums = ", ".join(
            f"sum(CASE WHEN {_did_test(d, as_of_ms)} THEN 1 ELSE 0 END) AS {did_key(d)}"
            for d in plain
        )
        ctes.append(f"counts AS (SELECT person_id, {sums} FROM tp GROUP BY person_id)")
        joins.append("LEFT JOIN counts USING (person_id)")
    for d in (d for d in dids if d.then is not None):
        name = did_key(d)
        ctes.append(f"{name}_0 AS (SELECT person_id, timestamp FROM tp WHERE {when_sql(d.filter)})")
        step, n = d.then, 0
        while step is not None:
            ok = (
                f"n.timestamp - p.prev <= {step.within_days * DAY_MS!r}"
                if (step.within_days is not None)
                else "TRUE"
            )
            ctes.append(
                f"{name}_{n + 1} AS (SELECT n.person_id, n.timestamp FROM "
                f"(SELECT person_id, timestamp FROM tp WHERE {when_sql(step.filter)}) n "
                f"ASOF JOIN (SELECT person_id, timestamp AS prev FROM {name}_{n}) p "
                f"ON n.person_id = p.person_id AND n.timestamp > p.prev WHERE {ok})"
            )
            step, n = step.then, n + 1
        window = (
            f"timestamp > {as_of_ms - d.within_days * DAY_MS!r}"
            if d.within_days is not None
            else "TRUE"
        )
        ctes.append(
            f"{name} AS (SELECT person_id, count(*) AS {name} FROM {name}_{n} "
            f"WHERE {window} GROUP BY person_id)"
        )
        joins.append(f"LEFT JOIN {name} USING (person_id)")
    flags = ", ".join(f"{node_sql(tree)} AS {_ident(sid)}" for sid, tree in segments.items())
    return f"WITH {', '.join(ctes)} SELECT person_id, {flags} FROM {matrix} AS m {' '.join(joins)}"


def _did_test(d: Did, as_of_ms: int) -> str:
    test = when_sql(d.filter)
    if d.within_days is not None:
        test += f" AND timestamp > {as_of_ms - d.within_days * DAY_MS!r}"  # as polars: not cut
    return test


def node_sql(node: Node) -> str:
    """Return a segment tree as a SQL Boolean expression (never NULL) over the matrix
    row and its ``did`` count columns."""
    if isinstance(node, All | AnyOf):
        glue = " AND " if isinstance(node, All) else " OR "
        return "(" + glue.join(node_sql(p) for p in node.parts) + ")"
    if isinstance(node, Not):
        return f"(NOT {node_sql(node.part)})"
    if isinstance(node, Compare):
        if node.field in ORDERED:
            order = ORDERED[node.field]
            rank = (
                "CASE "
                + " ".join(f"WHEN {node.field} = {quote(v)} THEN {i}" for i, v in enumerate(order))
                + " END"
            )
            if node.op in LIST_OPS:
                ranks = [float(order.index(v)) for v in node.value]
                return f"COALESCE({_compare(rank, node.op, ranks, text=False)}, FALSE)"
            target = order.index(node.value)
            return f"COALESCE({_compare(rank, node.op, target, text=False)}, FALSE)"
        default = "TRUE" if node.op is Op.EXISTS and not node.value else "FALSE"
        compared = _compare(node.field, node.op, node.value, text=node.field not in NUMBER_FIELDS)
        return f"COALESCE({compared}, {default})"
    if isinstance(node, Interest):
        weight = (
            f"COALESCE(list_filter(interests, lambda i: i.topic = {quote(node.topic)})[1].weight"
            ", 0.0)"
        )
        return f"COALESCE({_compare(weight, node.op, node.value, text=False)}, FALSE)"
    if isinstance(node, Reachable):
        return f"COALESCE(list_contains(channels, {quote(node.channel)}), FALSE)"
    if isinstance(node, TraitTest):
        return condition_sql(node.condition)
    count = f"COALESCE({did_key(node)}, 0)"
    return f"COALESCE({_compare(count, node.op, node.count, text=False)}, FALSE)"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
