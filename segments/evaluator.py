"""Segments evaluated over the matrix: the language's AST compiled to polars, in one pass.

:func:`evaluate` takes the matrix rows, the touchpoints (for ``did`` counts) and every
segment's tree, and returns one Boolean column per segment. All ``did`` counts of all
segments come from a single aggregation over the touchpoints.
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from segments.compiler import compare, compile_condition, compile_when
from segments.language import (
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
from segments.rules import LIST_OPS, Op
from segments.scoring import DAY_MS


def dids_of(node: Node) -> list[Did]:
    """Return the ``did`` nodes of a tree, in order, each once."""
    if isinstance(node, All | AnyOf):
        found = [d for part in node.parts for d in dids_of(part)]
        return list({repr(d): d for d in found}.values())  # nodes may hold lists: no hash
    if isinstance(node, Not):
        return dids_of(node.part)
    return [node] if isinstance(node, Did) else []


def did_counts(touchpoints: pl.LazyFrame, dids: list[Did], as_of_ms: int) -> pl.LazyFrame:
    """Return ``person_id, did_<i>…``: each ``did``'s matching touchpoints per person.

    Plain ``did`` counts come from one aggregation; each sequence (``then``) is matched
    step by step with an as-of join (every step's touchpoint against the latest one of
    the step before it).
    """
    past = touchpoints.filter(pl.col("timestamp") <= as_of_ms)
    plain = [(i, d) for i, d in enumerate(dids) if d.then is None]
    out = past.select("person_id").unique()
    if plain:
        ts = pl.col("timestamp")
        flags = []
        for i, did in plain:
            test = compile_when(did.filter)
            if did.within_days is not None:
                test = test & (ts > as_of_ms - did.within_days * DAY_MS)
            flags.append(test.cast(pl.UInt32).alias(f"did_{i}"))
        counts = (
            past.select("person_id", *flags)
            .group_by("person_id")
            .agg(pl.col(f"did_{i}").sum() for i, _ in plain)
        )
        out = out.join(counts, on="person_id", how="left")
    for i, did in enumerate(dids):
        if did.then is not None:
            out = out.join(_sequence(past, did, as_of_ms, f"did_{i}"), on="person_id", how="left")
    return out


def _sequence(past: pl.LazyFrame, did: Did, as_of_ms: int, name: str) -> pl.LazyFrame:
    """Count the last steps of ``did``'s sequence per person."""
    steps = past.filter(compile_when(did.filter)).select("person_id", "timestamp")
    step = did.then
    while step is not None:
        nxt = past.filter(compile_when(step.filter)).select("person_id", "timestamp")
        before = steps.select("person_id", prev=pl.col("timestamp")).sort("prev")
        joined = nxt.sort("timestamp").join_asof(
            before, left_on="timestamp", right_on="prev", by="person_id",
            strategy="backward", allow_exact_matches=False,
            check_sortedness=False,  # both sides sorted by time: so is every person's part
        )  # fmt: skip
        ok = pl.col("prev").is_not_null()
        if step.within_days is not None:
            ok = ok & (pl.col("timestamp") - pl.col("prev") <= step.within_days * DAY_MS)
        steps = joined.filter(ok).select("person_id", "timestamp")
        step = step.then
    if did.within_days is not None:
        steps = steps.filter(pl.col("timestamp") > as_of_ms - did.within_days * DAY_MS)
    return steps.group_by("person_id").agg(pl.len().cast(pl.UInt32).alias(name))


def compile_node(node: Node, dids: Mapping[str, str]) -> pl.Expr:
    """Return a Boolean expression (never null) over the matrix (and ``did`` columns,
    named in ``dids`` by the ``repr`` of their node)."""
    if isinstance(node, All):
        return pl.all_horizontal(compile_node(p, dids) for p in node.parts)
    if isinstance(node, AnyOf):
        return pl.any_horizontal(compile_node(p, dids) for p in node.parts)
    if isinstance(node, Not):
        return ~compile_node(node.part, dids)
    if isinstance(node, Compare):
        return _compare_field(node).fill_null(False)
    if isinstance(node, Interest):
        weight = (
            pl.col("interests")
            .list.eval(pl.element().filter(pl.element().struct.field("topic") == node.topic))
            .list.first()
            .struct.field("weight")
            .fill_null(0.0)
        )
        return compare(weight, node.op, node.value).fill_null(False)
    if isinstance(node, Reachable):
        return pl.col("channels").list.contains(node.channel).fill_null(False)
    if isinstance(node, TraitTest):
        return compile_condition(node.condition)
    count = pl.col(dids[repr(node)]).fill_null(0)
    return compare(count, node.op, node.count).fill_null(False)


def _compare_field(node: Compare) -> pl.Expr:
    if node.field not in ORDERED:
        return compare(pl.col(node.field), node.op, node.value)
    order = ORDERED[node.field]
    rank = pl.col(node.field).replace_strict(order, range(len(order)), default=None)
    if node.op in LIST_OPS:
        ranks = [order.index(v) for v in node.value]
        found = rank.is_in(ranks)
        return found if node.op is Op.IN else ~found
    return compare(rank, node.op, order.index(node.value))


def evaluate(
    matrix: pl.LazyFrame,
    touchpoints: pl.LazyFrame,
    segments: Mapping[str, Node],
    as_of_ms: int,
) -> pl.LazyFrame:
    """Return ``person_id`` and one Boolean column per segment id: who is in it."""
    found = [d for tree in segments.values() for d in dids_of(tree)]
    dids = list({repr(d): d for d in found}.values())
    names = {repr(did): f"did_{i}" for i, did in enumerate(dids)}
    rows = matrix.join(did_counts(touchpoints, dids, as_of_ms), on="person_id", how="left")
    return rows.select(
        "person_id", *(compile_node(tree, names).alias(sid) for sid, tree in segments.items())
    )
