"""Segments evaluated over the matrix: the language's AST compiled to polars, in one pass.

:func:`evaluate` takes the matrix rows, the touchpoints (for ``did`` counts) and every
segment's tree, and returns one Boolean column per segment. All ``did`` counts of all
segments come from a single aggregation over the touchpoints (:func:`did_counts`), in
columns named after the ``did`` itself (:func:`did_key`): a run can keep them and
recount only the persons whose touchpoints changed or whose counts expire
(``next_change``), then finish every segment with :func:`membership`.

One segment that cannot be evaluated must not stop the others: :func:`evaluate_apart`
leaves out each that fails alone (on frames without rows: :func:`check_segment`), runs
the rest in one pass, and only if that pass raises tries them one by one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Mapping
from typing import TypeVar

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
    Then,
    TraitTest,
)
from segments.matrix import PROFILE_TRAITS
from segments.personkey import KEY, all_keyed, person_key
from segments.rules import LIST_OPS, Op, RuleError, When
from segments.scoring import DAY_MS


def dids_of(node: Node) -> list[Did]:
    """Return the ``did`` nodes of a tree, in order, each once."""
    if isinstance(node, All | AnyOf):
        found = [d for part in node.parts for d in dids_of(part)]
        return list({repr(d): d for d in found}.values())  # nodes may hold lists: no hash
    if isinstance(node, Not):
        return dids_of(node.part)
    return [node] if isinstance(node, Did) else []


def did_key(did: Did) -> str:
    """Return the column name of a ``did``'s counts: the same ``did`` anywhere, the same
    name (in every segment, in every run)."""
    return "did_" + hashlib.sha256(repr(did).encode()).hexdigest()[:16]


def all_dids(segments: Mapping[str, Node]) -> list[Did]:
    """Return the ``did`` nodes of every segment, each once."""
    found = [d for tree in segments.values() for d in dids_of(tree)]
    return list({did_key(d): d for d in found}.values())


NEXT_CHANGE = "next_change"  # ms: when a person's windowed counts next change by time alone


def did_counts(
    touchpoints: pl.LazyFrame,
    dids: list[Did],
    as_of_ms: int,
    *,
    expiry: bool = False,
    by: str = "person_id",
) -> pl.LazyFrame:
    """Return ``by`` and one count column per ``did`` (:func:`did_key`) for every person
    with a touchpoint some ``did`` counts (the others count 0 everywhere).

    ``by`` is ``person_id``, or ``person_key`` (``segments.personkey``) for persons whose
    ids are all dmp's: then each counted touchpoint's id is read as its number and every
    grouping and join is by that (touchpoints whose ids have none are of no such person).

    The touchpoints are read once: every ``did``'s test (and every step's of a sequence)
    becomes a flag, and only the touchpoints some flag holds for are kept, with their
    person and time. Plain ``did`` counts come from one aggregation of those; each
    sequence (``then``) is matched step by step with an as-of join (every step's
    touchpoint against the latest one of the step before it). With ``expiry``,
    ``next_change`` says when the first counted touchpoint leaves its window (null:
    never): until then, without new touchpoints, every count stays as it is.
    """
    past = touchpoints.filter(pl.col("timestamp") <= as_of_ms)
    plain = [d for d in dids if d.then is None]
    sequences = [d for d in dids if d.then is not None]
    if not dids:
        return _person(past, by).unique()
    ts = pl.col("timestamp")
    flags, aggs, ends = [], [], []
    for did in plain:
        test, name = compile_when(did.filter), did_key(did)
        if did.within_days is not None:
            test = test & (ts > as_of_ms - did.within_days * DAY_MS)
        flags.append(test.alias(name))
        aggs.append(pl.col(name).sum().cast(pl.UInt32))
        if expiry and did.within_days is not None:
            window = int(did.within_days * DAY_MS)
            aggs.append((ts.filter(pl.col(name)).min() + window).alias(f"{name}_end"))
            ends.append(f"{name}_end")
    steps = {}  # a sequence step's filter -> its flag (the same filter, one flag)
    for did in sequences:
        for when in _steps(did):
            steps.setdefault(repr(when), (f"step_{len(steps)}", compile_when(when)))
    flags += [test.alias(flag) for flag, test in steps.values()]
    names = [f.meta.output_name() for f in flags]
    # One read of the touchpoints; the few columns of those some did counts, kept.
    hits = past.select("person_id", "timestamp", *flags).filter(pl.any_horizontal(names))
    hits = _person(hits, by, "timestamp", *names)
    parts = []
    if plain:
        counted = [did_key(d) for d in plain]
        parts.append(hits.filter(pl.any_horizontal(counted)).group_by(by).agg(aggs))
    for did in sequences:
        name = did_key(did)
        flagged = [steps[repr(when)][0] for when in _steps(did)]
        parts.append(_sequence(hits, did, flagged, as_of_ms, name, by, expiry=expiry))
        if expiry and did.within_days is not None:
            ends.append(f"{name}_end")
    out = parts[0]
    for part in parts[1:]:
        out = out.join(part, on=by, how="full", coalesce=True)
    if expiry:
        first = pl.min_horizontal(*ends) if ends else pl.lit(None, pl.Int64)
        out = out.with_columns(first.cast(pl.Int64).alias(NEXT_CHANGE)).drop(ends)
    return out


def _person(touchpoints: pl.LazyFrame, by: str, *columns: str) -> pl.LazyFrame:
    """Return the touchpoints' persons as ``by`` (``person_id`` or ``person_key``), with
    ``columns``; with keys, those of ids without one left out."""
    if by == "person_id":
        return touchpoints.select(by, *columns)
    key = person_key(pl.col("person_id")).alias(by)
    return touchpoints.select(key, *columns).filter(pl.col(by).is_not_null())


def _steps(did: Did) -> list[When]:
    """Return the filters of a sequence's steps, first to last."""
    found: list[When] = []
    step: Did | Then | None = did
    while step is not None:
        found.append(step.filter)
        step = step.then
    return found


def _sequence(
    hits: pl.LazyFrame,
    did: Did,
    flags: list[str],
    as_of_ms: int,
    name: str,
    by: str,
    *,
    expiry: bool = False,
) -> pl.LazyFrame:
    """Count the last steps of ``did``'s sequence per person (``by``), from touchpoints
    flagged for each step (``flags``, first to last); with ``expiry``, also when the
    first of them leaves the window, as ``<name>_end``."""
    steps = hits.filter(pl.col(flags[0])).select(by, "timestamp")
    step, k = did.then, 1
    while step is not None:
        nxt = hits.filter(pl.col(flags[k])).select(by, "timestamp")
        before = steps.select(by, prev=pl.col("timestamp")).sort("prev")
        joined = nxt.sort("timestamp").join_asof(
            before,
            left_on="timestamp",
            right_on="prev",
            by=by,
            strategy="backward",
            allow_exact_matches=False,
            check_sortedness=False,  # both sides sorted by time: so is every person's part
        )
        ok = pl.col("prev").is_not_null()
        if step.within_days is not None:
            ok = ok & (pl.col("timestamp") - pl.col("prev") <= step.within_days * DAY_MS)
        steps = joined.filter(ok).select(by, "timestamp")
        step, k = step.then, k + 1
    ends = []
    if did.within_days is not None:  # the window of a plain did's (not cut to whole ms)
        window = int(did.within_days * DAY_MS)
        steps = steps.filter(pl.col("timestamp") > as_of_ms - did.within_days * DAY_MS)
        if expiry:
            ends.append((pl.col("timestamp").min() + window).alias(f"{name}_end"))
    return steps.group_by(by).agg(pl.len().cast(pl.UInt32).alias(name), *ends)


def profile_of(schema: Collection[str]) -> frozenset[str]:
    """Return the profile traits a frame of these columns holds as columns of their own
    (a matrix row's: see :func:`segments.compiler.compile_condition`)."""
    return frozenset(PROFILE_TRAITS).intersection(schema)


def compile_node(node: Node, profile: Collection[str] = ()) -> pl.Expr:
    """Return a Boolean expression (never null) over the matrix and the ``did`` columns;
    ``profile`` the traits the matrix holds as columns (:func:`profile_of`)."""
    if isinstance(node, All):
        return pl.all_horizontal(compile_node(p, profile) for p in node.parts)
    if isinstance(node, AnyOf):
        return pl.any_horizontal(compile_node(p, profile) for p in node.parts)
    if isinstance(node, Not):
        return ~compile_node(node.part, profile)
    if isinstance(node, Compare):
        return _compare_field(node).fill_null(False)
    if isinstance(node, Interest):
        # The first weight of the topic (0 without one); only the weights are filtered,
        # not the whole structs (a fifth quicker over 1M persons).
        item = pl.element().struct
        weight = (
            pl.col("interests")
            .list.eval(item.field("weight").filter(item.field("topic") == node.topic))
            .list.first()
            .fill_null(0.0)
        )
        return compare(weight, node.op, node.value, number=True).fill_null(False)
    if isinstance(node, Reachable):
        return pl.col("channels").list.contains(node.channel).fill_null(False)
    if isinstance(node, TraitTest):
        return compile_condition(node.condition, profile)
    count = pl.col(did_key(node)).fill_null(0)
    return compare(count, node.op, node.count, number=True).fill_null(False)


def _compare_field(node: Compare) -> pl.Expr:
    if node.field not in ORDERED:
        return compare(pl.col(node.field), node.op, node.value)
    order = ORDERED[node.field]
    value = pl.col(node.field)
    if node.op in LIST_OPS:
        # Membership needs no ranks: a value in the list, of those in the order (a value
        # outside it is in no list and in no complement either).
        found = pl.when(value.is_in(order)).then(value.is_in(list(node.value)))
        return found if node.op is Op.IN else ~found
    rank = value.replace_strict(order, range(len(order)), default=None)
    return compare(rank, node.op, order.index(node.value), number=True)


def membership(
    matrix: pl.LazyFrame, counts: pl.LazyFrame, segments: Mapping[str, Node]
) -> pl.LazyFrame:
    """Return ``person_id`` and one Boolean column per segment id, from the matrix rows
    and the ``did`` counts (:func:`did_counts`; persons without a row there counted 0),
    by ``person_key`` if the counts are by that (the matrix's ids all dmp's)."""
    rows = matrix
    if all_dids(segments):
        if KEY in counts.collect_schema():
            keyed = matrix.with_columns(person_key(pl.col("person_id")).alias(KEY))
            rows = keyed.join(counts, on=KEY, how="left").drop(KEY)
        else:
            rows = matrix.join(counts, on="person_id", how="left")
    profile = profile_of(matrix.collect_schema().names())
    return rows.select(
        "person_id", *(compile_node(tree, profile).alias(sid) for sid, tree in segments.items())
    )


def evaluate(
    matrix: pl.LazyFrame,
    touchpoints: pl.LazyFrame,
    segments: Mapping[str, Node],
    as_of_ms: int,
) -> pl.LazyFrame:
    """Return ``person_id`` and one Boolean column per segment id: who is in it.

    The matrix's ids are read first, to count by their keys if they are all dmp's."""
    by = KEY if all_keyed(matrix) else "person_id"
    counts = did_counts(touchpoints, all_dids(segments), as_of_ms, by=by)
    return membership(matrix, counts, segments)


T = TypeVar("T")
MAX_ERROR = 300  # characters of a failure's message kept in a run record


def check_segment(
    tree: Node,
    matrix_schema: Mapping[str, pl.DataType],
    touchpoint_schema: Mapping[str, pl.DataType],
    as_of_ms: int,
    *,
    run: bool = True,
) -> None:
    """Raise what compiling ``tree`` raises (a number no expression holds) and, with
    ``run``, what evaluating it raises on frames of these schemas without rows (an
    expression that does not suit its columns' types)."""
    touchpoints = pl.LazyFrame(schema=dict(touchpoint_schema))
    counts = did_counts(touchpoints, dids_of(tree), as_of_ms, expiry=True)
    flags = membership(pl.LazyFrame(schema=dict(matrix_schema)), counts, {"segment": tree})
    if run:
        flags.collect()


def evaluate_apart(
    segments: Mapping[str, Node],
    attempt: Callable[[Mapping[str, Node]], T],
    check: Callable[[Node, bool], None],
    fatal: tuple[type[BaseException], ...] = (),
) -> tuple[T, dict[str, str]]:
    """Return ``attempt`` of every segment that does not fail, and the error of each that
    does (by id). Each segment is compiled apart (``check(tree, False)``: cheap), the
    others go through ``attempt`` in one pass; only if that raises, each is checked on
    frames without rows (``check(tree, True)``) and, if the rest still raises, attempted
    alone to find the culprits. ``fatal`` errors are never a segment's fault (storage,
    the network): raised as they come, as is the pass's error when no segment fails
    alone, or when every one of several does (a fault of the data or the code)."""
    failed: dict[str, str] = {}
    _sift(segments, lambda sid, tree: check(tree, False), failed, fatal)
    rest = {sid: tree for sid, tree in segments.items() if sid not in failed}
    together: Exception | None = None  # the error of the last pass over the rest
    finds = (None, lambda sid, tree: check(tree, True), lambda sid, tree: attempt({sid: tree}))
    for find in finds:
        if find is not None:  # after a failed pass: look for culprits, the next way
            if not _sift(rest, find, failed, fatal):
                continue
            if len(rest) > 1 and set(rest) <= set(failed):
                raise together  # type: ignore[misc]
            rest = {sid: tree for sid, tree in rest.items() if sid not in failed}
        try:
            return attempt(rest), failed
        except fatal:
            raise
        except Exception as exc:
            together = exc
    raise together  # type: ignore[misc]  # no segment fails alone: not one's fault


def _sift(
    segments: Mapping[str, Node],
    test: Callable[[str, Node], object],
    failed: dict[str, str],
    fatal: tuple[type[BaseException], ...],
) -> bool:
    """Add the segments ``test`` raises for to ``failed``; return whether any did."""
    found = False
    for sid, tree in segments.items():
        if sid in failed:
            continue
        try:
            test(sid, tree)
        except fatal:
            raise
        except Exception as exc:  # whatever it is, it is this segment's
            failed[sid], found = describe_failure(exc), True
    return found


def describe_failure(exc: BaseException) -> str:
    """Return an error as one short line: ``InvalidOperationError: expected String…``
    (a RuleError as its path and problem)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else "(no message)"
    text = text if isinstance(exc, RuleError) else f"{type(exc).__name__}: {text}"
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"
