"""Rules (:mod:`segments.rules`) and segments compiled to SQL: the backend beside polars.

One emitter walks the typed AST for every dialect; a :class:`~segments.sqldialect.Dialect`
holds the few spellings DuckDB and Spark SQL do not share. Not sqlglot: it does not
transpile DuckDB's ``ASOF JOIN`` (Spark matches a ``did … then …`` step with a window
instead) and writes list functions Spark refuses, so a second dialect would need a
second copy of the rules' SQL, which the table avoids.

The frames follow :mod:`segments.compiler`'s convention and the answers are polars':
a condition on something missing is false, ``exists: false`` aside. The matrix
(:mod:`segments.sqlmatrix`) and the Spark engine (``dmp.matrix.spark``) are built on it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from segments.compiler import COLUMN
from segments.evaluator import NEXT_CHANGE, all_dids, did_key
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
from segments.rules import LIST_OPS, NUMERIC_OPS, Attr, Condition, Op, When
from segments.scoring import DAY_MS
from segments.sqldialect import DUCKDB, Dialect, Engine

# What polars reads as a number (and Java's parseDouble reads more of: 1d, 0x1p3).
_NUMBER = r"(?i)^[+-]?((\d+\.?\d*|\.\d+)(e[+-]?\d+)?|inf|infinity|nan)$"


def when_sql(when: When, dialect: Dialect = DUCKDB) -> str:
    """Return a SQL Boolean expression (never NULL) for all of ``when``'s conditions."""
    parts = [condition_sql(c, dialect) for c in when.conditions]
    return " AND ".join(parts) if parts else "TRUE"


def condition_sql(c: Condition, dialect: Dialect = DUCKDB, profile: Collection[str] = ()) -> str:
    """Return a SQL Boolean expression (never NULL) for one condition; ``profile`` the
    traits the row holds as columns (as :func:`segments.compiler.compile_condition`)."""
    if c.attr is Attr.TOPIC:
        return f"COALESCE({_topics(c, dialect)}, FALSE)"
    if c.attr is Attr.TRAIT and c.name in profile:
        value = c.name  # a profile trait's column: [a-z_]
    elif c.attr is Attr.TRAIT:
        value = dialect.json_text.format("traits", c.name)  # names: [A-Za-z0-9_.-]
    elif c.attr is Attr.PROPERTY:
        value = dialect.json_text.format("properties", c.name)
    else:
        value = COLUMN[c.attr]
    default = "TRUE" if c.op is Op.EXISTS and not c.value else "FALSE"
    return f"COALESCE({_compare(value, c.op, c.value, dialect)}, {default})"


def _compare(value: str, op: Op, target: object, d: Dialect, *, text: bool = True) -> str:
    """``value op target`` in SQL, as :func:`segments.compiler.compare` (NULL where the
    value is missing); ``text``: the value is text, read as a number with
    :func:`number_sql`."""
    if op is Op.EXISTS:
        present = f"({value} IS NOT NULL AND {value} <> '')"
        return present if target else f"NOT {present}"
    number = number_sql(value, d) if text else value
    if op in NUMERIC_OPS:
        sign = {Op.GT: ">", Op.GTE: ">=", Op.LT: "<", Op.LTE: "<="}[op]
        return f"({number} {sign} {float(target)!r})"  # type: ignore[arg-type]
    if op in LIST_OPS or (op in (Op.EQ, Op.NE) and _is_number(target)):
        items = target if op in LIST_OPS else [target]
        assert isinstance(items, list)
        numbers = ", ".join(repr(float(t)) for t in items if _is_number(t))
        texts = ", ".join(d.quote(t) for t in items if not _is_number(t))
        parts = ["FALSE"]
        if numbers:
            parts.append(f"COALESCE({number} IN ({numbers}), FALSE)")
        if texts:
            parts.append(f"{value} IN ({texts})")
        found = f"(CASE WHEN {value} IS NULL THEN NULL ELSE {' OR '.join(parts)} END)"
        return found if op in (Op.IN, Op.EQ) else f"(NOT {found})"
    if op is Op.CONTAINS:
        return f"contains({value}, {d.quote(str(target))})"
    if op is Op.MATCHES:
        return d.regexp.format(value, d.quote(str(target)))
    sign = "=" if op is Op.EQ else "<>"
    return f"({value} {sign} {d.quote(str(target))})"


def number_sql(value: str, dialect: Dialect = DUCKDB) -> str:
    """Return text read as a number as :func:`segments.compiler.as_number` reads it: NULL
    for NaN, and for what the engine reads and polars does not (spaces around, ``1_000``;
    on Spark also Java's ``1d`` and hexadecimal)."""
    cast = f"NULLIF({dialect.try_double.format(value)}, {dialect.nan})"
    if dialect.engine is Engine.SPARK:
        return f"(CASE WHEN {value} RLIKE {dialect.quote(_NUMBER)} THEN {cast} ELSE NULL END)"
    return f"(CASE WHEN regexp_matches({value}, '[ \\t\\n\\v\\f\\r_]') THEN NULL ELSE {cast} END)"


def _topics(c: Condition, d: Dialect) -> str:
    if c.op is Op.EXISTS:
        has = f"({d.size.format('topics')} > 0)"
        return has if c.value else f"NOT {has}"
    negate = c.op in (Op.NE, Op.NOT_IN)
    op = {Op.NE: Op.EQ, Op.NOT_IN: Op.IN}.get(c.op, c.op)
    hits = d.list_filter.format("topics", "t", _compare("t", op, c.value, d))
    hit = f"({d.size.format(hits)} > 0)"
    return f"(NOT {hit})" if negate else hit


def quote(text: str, dialect: Dialect = DUCKDB) -> str:
    """Return a SQL string literal."""
    return dialect.quote(text)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def segments_sql(
    segments: Mapping[str, Node],
    as_of_ms: int,
    *,
    matrix: str,
    touchpoints: str,
    dialect: Dialect = DUCKDB,
    profile: Collection[str] = (),
) -> str:
    """Return one query giving :func:`segments.evaluator.evaluate`'s table:
    ``person_id`` and one Boolean column per segment.

    ``matrix`` is a table expression with the matrix's rows, ``touchpoints`` one with
    :data:`segments.matrix.TOUCHPOINT_SCHEMA` (ms timestamps, merges applied);
    ``profile`` the traits the matrix holds as columns (a snapshot's rows: all of
    ``segments.matrix.PROFILE_TRAITS``).
    """
    if not all_dids(segments):
        return membership_sql(
            segments, matrix=matrix, counts=None, dialect=dialect, profile=profile
        )
    counts = did_counts_sql(all_dids(segments), as_of_ms, touchpoints=touchpoints, dialect=dialect)
    flags = membership_sql(
        segments, matrix=matrix, counts="counts", dialect=dialect, profile=profile
    )
    return f"WITH counts AS ({counts}) {flags}"


def membership_sql(
    segments: Mapping[str, Node],
    *,
    matrix: str,
    counts: str | None,
    dialect: Dialect = DUCKDB,
    profile: Collection[str] = (),
) -> str:
    """Return a query giving :func:`segments.evaluator.membership`'s table from the matrix
    rows and the ``did`` counts (:func:`did_counts_sql`; None when no segment has one);
    ``profile`` as for :func:`segments_sql`."""
    flags = ", ".join(
        f"{node_sql(tree, dialect, profile)} AS {dialect.ident(sid)}"
        for sid, tree in segments.items()
    )
    join = f" LEFT JOIN {counts} USING (person_id)" if counts is not None else ""
    return f"SELECT person_id, {flags} FROM {matrix} AS m{join}"


def did_counts_sql(
    dids: list[Did],
    as_of_ms: int,
    *,
    touchpoints: str,
    dialect: Dialect = DUCKDB,
    expiry: bool = False,
) -> str:
    """Return a query giving :func:`segments.evaluator.did_counts`' table: ``person_id``
    and one count column per ``did`` (:func:`did_key`), only for persons some ``did``
    counts, and with ``expiry`` ``next_change`` (when the first counted touchpoint
    leaves its window)."""
    d, ts = dialect, dialect.ident("timestamp")
    ctes = [f"tp AS (SELECT * FROM {touchpoints} WHERE {ts} <= {as_of_ms})"]
    parts, ends = [], []
    plain = [x for x in dids if x.then is None]
    if plain:
        tests = {did_key(x): _did_test(x, as_of_ms, d) for x in plain}
        aggs = [f"sum(CASE WHEN {t} THEN 1 ELSE 0 END) AS {k}" for k, t in tests.items()]
        for x in plain:
            if expiry and x.within_days is not None:
                end = f"{did_key(x)}_end"
                window = int(x.within_days * DAY_MS)
                aggs.append(f"min(CASE WHEN {tests[did_key(x)]} THEN {ts} END) + {window} AS {end}")
                ends.append(end)
        # Only touchpoints some did counts are grouped: persons without any count 0.
        ctes.append(
            f"plain AS (SELECT person_id, {', '.join(aggs)} FROM tp "
            f"WHERE {' OR '.join(f'({t})' for t in tests.values())} GROUP BY person_id)"
        )
        parts.append("plain")
    for x in (x for x in dids if x.then is not None):
        name = did_key(x)
        ctes += _sequence_ctes(x, as_of_ms, name, d)
        aggs = [f"count(*) AS {name}"]
        if expiry and x.within_days is not None:
            aggs.append(f"min({ts}) + {int(x.within_days * DAY_MS)} AS {name}_end")
            ends.append(f"{name}_end")
        window = (
            f"{ts} > {as_of_ms - x.within_days * DAY_MS!r}" if x.within_days is not None else "TRUE"
        )
        ctes.append(
            f"{name} AS (SELECT person_id, {', '.join(aggs)} FROM {name}_steps "
            f"WHERE {window} GROUP BY person_id)"
        )
        parts.append(name)
    if not parts:
        return f"WITH {', '.join(ctes)} SELECT DISTINCT person_id FROM tp"
    joined = parts[0] + "".join(f" FULL OUTER JOIN {p} USING (person_id)" for p in parts[1:])
    columns = [did_key(x) for x in dids]
    if expiry:
        first = f"least({', '.join(ends)})" if len(ends) > 1 else (ends[0] if ends else "NULL")
        columns.append(f"CAST({first} AS BIGINT) AS {NEXT_CHANGE}")
    return f"WITH {', '.join(ctes)} SELECT person_id, {', '.join(columns)} FROM {joined}"


def _sequence_ctes(did: Did, as_of_ms: int, name: str, d: Dialect) -> list[str]:
    """The CTEs matching a ``did … then …`` sequence step by step, ``<name>_steps`` the
    last step's touchpoints: each step's touchpoint matched with the latest one of the
    step before it, strictly earlier (and within the step's days)."""
    ts = d.ident("timestamp")
    ctes = [f"{name}_0 AS (SELECT person_id, {ts} FROM tp WHERE {when_sql(did.filter, d)})"]
    step, n = did.then, 0
    while step is not None:
        nxt = f"SELECT person_id, {ts} FROM tp WHERE {when_sql(step.filter, d)}"
        before, gap = f"{name}_{n}", step.within_days
        ok = f"{ts} - prev <= {gap * DAY_MS!r}" if gap is not None else "TRUE"
        if d.engine is Engine.DUCKDB:
            matched = (
                f"SELECT n.person_id, n.{ts} FROM ({nxt}) n "
                f"ASOF JOIN (SELECT person_id, {ts} AS prev FROM {before}) p "
                f"ON n.person_id = p.person_id AND n.{ts} > p.prev "
                f"WHERE {ok.replace(ts, 'n.' + ts, 1)}"
            )
        else:
            # One pass over both steps' rows in time order, earlier steps' rows after the
            # step's own at the same time (strictly earlier, as the as-of join): the running
            # maximum is the latest earlier time. A range join would be quadratic per person.
            rows = (
                f"SELECT person_id, {ts}, 0 AS tag, CAST(NULL AS BIGINT) AS prev FROM ({nxt}) "
                f"UNION ALL SELECT person_id, {ts}, 1 AS tag, {ts} AS prev FROM {before}"
            )
            latest = (
                f"SELECT person_id, {ts}, tag, max(prev) OVER (PARTITION BY person_id ORDER BY "
                f"{ts}, tag ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS prev FROM ({rows})"
            )
            matched = (
                f"SELECT person_id, {ts} FROM ({latest}) "
                f"WHERE tag = 0 AND prev IS NOT NULL AND {ok}"
            )
        ctes.append(f"{name}_{n + 1} AS ({matched})")
        step, n = step.then, n + 1
    ctes.append(f"{name}_steps AS (SELECT * FROM {name}_{n})")
    return ctes


def _did_test(d: Did, as_of_ms: int, dialect: Dialect) -> str:
    test = when_sql(d.filter, dialect)
    if d.within_days is not None:  # as polars: not cut to whole ms
        test += f" AND {dialect.ident('timestamp')} > {as_of_ms - d.within_days * DAY_MS!r}"
    return test


def node_sql(node: Node, dialect: Dialect = DUCKDB, profile: Collection[str] = ()) -> str:
    """Return a segment tree as a SQL Boolean expression (never NULL) over the matrix
    row and its ``did`` count columns; ``profile`` as for :func:`segments_sql`."""
    d = dialect
    if isinstance(node, All | AnyOf):
        glue = " AND " if isinstance(node, All) else " OR "
        return "(" + glue.join(node_sql(p, d, profile) for p in node.parts) + ")"
    if isinstance(node, Not):
        return f"(NOT {node_sql(node.part, d, profile)})"
    if isinstance(node, Compare):
        if node.field in ORDERED:
            order = ORDERED[node.field]
            whens = (f"WHEN {node.field} = {d.quote(v)} THEN {i}" for i, v in enumerate(order))
            rank = "CASE " + " ".join(whens) + " END"
            if node.op in LIST_OPS:
                ranks = [float(order.index(v)) for v in node.value]
                return f"COALESCE({_compare(rank, node.op, ranks, d, text=False)}, FALSE)"
            target = order.index(node.value)
            return f"COALESCE({_compare(rank, node.op, target, d, text=False)}, FALSE)"
        default = "TRUE" if node.op is Op.EXISTS and not node.value else "FALSE"
        text = node.field not in NUMBER_FIELDS
        compared = _compare(node.field, node.op, node.value, d, text=text)
        return f"COALESCE({compared}, {default})"
    if isinstance(node, Interest):
        hits = d.list_filter.format("interests", "i", f"i.topic = {d.quote(node.topic)}")
        weight = f"COALESCE({d.first_item.format(hits)}.weight, 0.0)"
        return f"COALESCE({_compare(weight, node.op, node.value, d, text=False)}, FALSE)"
    if isinstance(node, Reachable):
        found = d.list_contains.format("channels", d.quote(node.channel))
        return f"COALESCE({found}, FALSE)"
    if isinstance(node, TraitTest):
        return condition_sql(node.condition, d, profile)
    count = f"COALESCE({did_key(node)}, 0)"
    return f"COALESCE({_compare(count, node.op, node.count, d, text=False)}, FALSE)"
