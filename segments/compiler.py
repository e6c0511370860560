"""Rules (:mod:`segments.rules`) compiled to polars expressions.

The frames they run on follow one convention, which ``dmp/`` keeps when it reads data:

- a touchpoint frame has the Utf8 columns ``event, type, source, channel, site_id, url,
  title``, ``topics`` (List[Utf8]) and ``properties`` (a JSON object as Utf8, or null);
- a person frame has ``traits``, a JSON object as Utf8 (each trait's value as sent);
  a matrix row also holds its profile traits as columns of their own, each the trait's
  value as :func:`trait_value` reads it (``segments.matrix.PROFILE_TRAITS``).

A condition on something missing is false (``ne`` and ``not_in`` included); only
``exists: false`` holds for it. Compared with a number, a value is read as one
(:func:`as_number`); one that reads as none equals no number, and differs from each.
"""

from __future__ import annotations

from collections.abc import Collection

import polars as pl

from segments.rules import LIST_OPS, NUMERIC_OPS, Attr, Condition, Op, When

COLUMN = {
    Attr.EVENT: "event",
    Attr.TYPE: "type",
    Attr.SOURCE: "source",
    Attr.CHANNEL: "channel",
    Attr.SITE: "site_id",
    Attr.URL: "url",
    Attr.TITLE: "title",
}


def compile_when(when: When) -> pl.Expr:
    """Return a Boolean expression (never null) that holds where all conditions hold."""
    expr = pl.lit(True)
    for condition in when.conditions:
        expr = expr & compile_condition(condition)
    return expr


def compile_condition(c: Condition, profile: Collection[str] = ()) -> pl.Expr:
    """Return a Boolean expression (never null) for one condition.

    ``profile``: traits the frame holds as columns of their own (a matrix row's profile
    traits), read there rather than from the JSON: the same values, without parsing
    every person's traits again for every condition."""
    if c.attr is Attr.TOPIC:
        return _on_topics(c).fill_null(False)
    if c.attr is Attr.TRAIT:
        value = pl.col(c.name) if c.name in profile else trait_value(c.name)
    elif c.attr is Attr.PROPERTY:
        value = pl.col("properties").str.json_path_match(f"$['{c.name}']")
    else:
        value = pl.col(COLUMN[c.attr])
    return compare(value, c.op, c.value).fill_null(c.op is Op.EXISTS and not c.value)


def trait_value(name: str) -> pl.Expr:
    """Return a trait's value from the ``traits`` JSON: a text as it is, any other value as
    JSON text, null when missing."""
    return pl.col("traits").str.json_path_match(f"$['{name}']")


def compare(value: pl.Expr, op: Op, target: object, *, number: bool = False) -> pl.Expr:
    """Return ``value op target`` as a Boolean expression (null where value is missing).

    For a value that is there, ``ne`` is ``not eq`` and ``not_in`` is ``not in``; ``in``
    is ``eq`` with one of the items. A number target compares the value read as a number
    (:func:`as_number`): a value that reads as none equals no number (and is neither
    greater nor less than one). With ``number`` the value is one already, never NaN (a
    count, a rank, an interest weight) and is only cast: reading it as a number would
    evaluate it twice (``fill_nan``), which costs where it is a list expression."""
    if op is Op.EXISTS:
        present = value.is_not_null() & (value != "")
        return present if target else ~present
    read = value.cast(pl.Float64) if number else as_number(value)
    if op in NUMERIC_OPS:
        return {
            Op.GT: read > target,
            Op.GTE: read >= target,
            Op.LT: read < target,
            Op.LTE: read <= target,
        }[op]
    if op in LIST_OPS or (op in (Op.EQ, Op.NE) and _is_number(target)):
        items = target if op in LIST_OPS else [target]
        assert isinstance(items, list)
        numbers = [float(t) for t in items if _is_number(t)]
        texts = [t for t in items if not _is_number(t)]
        hits = [_one_of(read, numbers).fill_null(False)] if numbers else []
        hits += [_one_of(value, texts)] if texts else []
        found = pl.when(value.is_not_null()).then(pl.any_horizontal(hits))  # null: missing
        return found if op in (Op.IN, Op.EQ) else ~found
    if op is Op.CONTAINS:
        return value.str.contains(str(target), literal=True)
    if op is Op.MATCHES:
        return value.str.contains(str(target))
    return value == str(target) if op is Op.EQ else value != str(target)


def _one_of(value: pl.Expr, items: list) -> pl.Expr:
    return value == items[0] if len(items) == 1 else value.is_in(items)


def as_number(value: pl.Expr) -> pl.Expr:
    """Return the value read as a number: null where it reads as none (NaN included,
    which polars would order above every number)."""
    return value.cast(pl.Float64, strict=False).fill_nan(None)


def _on_topics(c: Condition) -> pl.Expr:
    """A topic condition holds when any of the touchpoint's topics meets it (ne: none)."""
    topics = pl.col("topics")
    if c.op is Op.EXISTS:
        has = topics.list.len() > 0
        return has if c.value else ~has
    negate = c.op in (Op.NE, Op.NOT_IN)
    op = {Op.NE: Op.EQ, Op.NOT_IN: Op.IN}.get(c.op, c.op)
    items = list(c.value) if op is Op.IN else [c.value]  # type: ignore[call-overload]
    if op in (Op.EQ, Op.IN) and items and all(isinstance(t, str) for t in items):
        # Texts as they are: a lookup in each list, not an expression run per element.
        hit = pl.any_horizontal(topics.list.contains(t) for t in items)
        return ~hit if negate else hit
    hit = topics.list.eval(compare(pl.element(), op, c.value)).list.any()
    return ~hit if negate else hit


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
