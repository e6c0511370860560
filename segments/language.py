"""The segment language: a ``where`` tree over the touchpoint matrix, as a typed AST.

    where:
      all:
        - tier: {gte: medium}                 # tiers and stages compare by their order
        - score: {gte: 50}
        - stage: {in: [mql, sal]}
        - interest: {topic: marketing-automation, gte: 0.2}
        - channel: email
        - did: {event: whitepaper_download, within_days: 30, count_gte: 1}
        - not: {did: {event: page, url_contains: /careers}}
        - any:
            - trait: {name: country, in: [DE, AT, CH]}
            - trait: {name: employees, gte: 200}

``all`` / ``any`` / ``not`` nest without limit. A ``did`` node counts the person's
touchpoints that meet a touchpoint filter (:func:`segments.rules.parse_when`'s
vocabulary) within a window. Errors name the path: ``where.all[3].interest.gte:
expected a number``. :mod:`segments.evaluator` compiles the tree to polars.
:func:`format_rule` writes a tree back as canonical YAML text, which :func:`parse_rule`
reads as an equal tree.

Numbers are finite and never true/false: windows (``within_days``, a ``then``'s too)
more than 0 and at most 3650 days; ``count_…`` whole, 0 to 1,000,000; interest shares 0
to 1; every other threshold from -1e15 to 1e15 (``segments.rules.MAX_NUMBER``). Number
columns take eq, ne, gt, gte, lt, lte, in and not_in only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dmp.records import Stage, Tier
from segments.rules import (
    LIST_OPS,
    NUMERIC_OPS,
    Attr,
    Condition,
    Op,
    RuleError,
    When,
    check_number,
    in_range,
    make_condition,
    parse_when,
    when_data,
)
from segments.yamltext import dump_yaml, load_yaml

# Matrix columns a condition may compare, and the kind of value each holds.
NUMBER_FIELDS = (
    "score",
    "fit_score",
    "activity_score",
    "touchpoints_total",
    "touchpoints_7d",
    "touchpoints_30d",
    "touchpoints_90d",
    "days_since_last_touch",
)
TEXT_FIELDS = (
    "email",
    "company",
    "job_title",
    "industry",
    "country",
    "top_interest",
    "last_channel",
    "next_content",
)
ORDERED = {"tier": [t.value for t in Tier], "stage": [s.value for s in Stage]}
CHANNELS = ("retargeting", "email", "phone", "postal")
MAX_DEPTH = 64  # all/any/not levels: deeper trees are refused, not recursed into
MAX_STEPS = 16  # then steps of one did sequence
MAX_DAYS = 3650  # a did or then window: ten years at most (more than any event log holds)
MAX_COUNT = 1_000_000  # a did count compared with: touchpoints of one person
NUMBER_OPS = (*NUMERIC_OPS, Op.EQ, Op.NE, *LIST_OPS)  # what a number column compares with
COUNT_OPS = {
    "count_gte": Op.GTE,
    "count_gt": Op.GT,
    "count_lte": Op.LTE,
    "count_lt": Op.LT,
    "count_eq": Op.EQ,
}


@dataclass(frozen=True, slots=True)
class All:
    """Every part holds."""

    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    """At least one part holds."""

    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    """The part does not hold."""

    part: Node


@dataclass(frozen=True, slots=True)
class Compare:
    """A matrix column compared with a value (tier and stage by their order)."""

    field: str
    op: Op
    value: Any


@dataclass(frozen=True, slots=True)
class Interest:
    """The person's interest weight in a topic (0 when none) compared with a number."""

    topic: str
    op: Op
    value: float


@dataclass(frozen=True, slots=True)
class Reachable:
    """The person can be reached on a channel (with consent)."""

    channel: str


@dataclass(frozen=True, slots=True)
class TraitTest:
    """A trait condition (the vocabulary of :mod:`segments.rules`)."""

    condition: Condition


@dataclass(frozen=True, slots=True)
class Then:
    """A later step: a touchpoint meeting ``filter`` at most ``within_days`` after the step
    before it (any time after, if None)."""

    filter: When
    within_days: float | None
    then: Then | None = None


@dataclass(frozen=True, slots=True)
class Did:
    """How many touchpoints meet ``filter`` within ``within_days`` (all time if None).

    With ``then``, the count is of sequences' last steps: touchpoints meeting the last
    filter, each following a touchpoint of the step before within that step's days.
    """

    filter: When
    within_days: float | None
    op: Op
    count: int
    then: Then | None = None


Node = All | AnyOf | Not | Compare | Interest | Reachable | TraitTest | Did


def parse_where(data: Any, path: str = "where") -> Node:
    """Return the AST of a ``where`` tree (RuleError names the path and the problem)."""
    if path.count(".") > MAX_DEPTH:
        raise RuleError(path[:80] + "…", f"conditions nest more than {MAX_DEPTH} levels deep")
    if not isinstance(data, Mapping) or len(data) != 1:
        raise RuleError(path, "expected one condition, e.g. {score: {gte: 50}} or {all: [...]}")
    (key, value), at = next(iter(data.items())), f"{path}.{next(iter(data))}"
    if key in ("all", "any"):
        if not isinstance(value, list) or not value:
            raise RuleError(at, "expected a non-empty list of conditions")
        parts = tuple(parse_where(part, f"{at}[{i}]") for i, part in enumerate(value))
        return All(parts) if key == "all" else AnyOf(parts)
    if key == "not":
        return Not(parse_where(value, at))
    if key in ORDERED or key in NUMBER_FIELDS or key in TEXT_FIELDS:
        return _compare(key, value, at)
    if key == "interest":
        return _interest(value, at)
    if key == "channel":
        if value not in CHANNELS:
            raise RuleError(at, f"expected one of {', '.join(CHANNELS)}")
        return Reachable(value)
    if key == "trait":
        conditions = parse_when({"trait": value}, path, scope="person").conditions
        if len(conditions) != 1:  # {name: employees, gte: 50, lt: 500}
            raise RuleError(at, "expected one operator per trait; for a range use all: [...]")
        return TraitTest(conditions[0])
    if key == "did":
        return _did(value, at)
    known = [
        "all",
        "any",
        "not",
        "interest",
        "channel",
        "trait",
        "did",
        *ORDERED,
        *NUMBER_FIELDS,
        *TEXT_FIELDS,
    ]
    raise RuleError(at, f"unknown condition (known: {', '.join(known)})")


def _compare(field: str, value: Any, at: str) -> Compare:
    if not isinstance(value, Mapping):
        value = {"eq": value}
    if len(value) != 1:
        raise RuleError(at, "expected one operator, e.g. {gte: 50}")
    op_name, target = next(iter(value.items()))
    where = f"{at}.{op_name}"
    if op_name not in Op._value2member_map_:
        raise RuleError(where, "unknown operator")
    op = Op(op_name)
    if field in ORDERED:
        order = ORDERED[field]
        listed = op in LIST_OPS
        values = target if listed and isinstance(target, list) else [target]
        if (
            op in (Op.CONTAINS, Op.MATCHES, Op.EXISTS)
            or listed != isinstance(target, list)
            or not values
            or any(v not in order for v in values)
        ):
            wanted = f"a list of {field}s" if listed else f"{field}s"
            raise RuleError(where, f"expected {wanted} out of {', '.join(order)}")
        return Compare(field, op, target)
    if field in NUMBER_FIELDS:
        if op not in NUMBER_OPS:  # text operators fail on a number column when run
            names = ", ".join(o.value for o in Op if o in NUMBER_OPS)
            raise RuleError(where, f"expected one of {names} ({field} is a number)")
        if op in LIST_OPS:
            if not isinstance(target, list) or not target:
                raise RuleError(where, "expected a non-empty list of numbers")
            for i, item in enumerate(target):
                check_number(item, f"{where}[{i}]")
        else:
            check_number(target, where)
        return Compare(field, op, target)
    # Other fields take the trait vocabulary's operators and checks.
    return Compare(field, op, make_condition(Attr.TRAIT, op, target, field, where).value)


def _interest(value: Any, at: str) -> Interest:
    if not isinstance(value, Mapping) or not isinstance(value.get("topic"), str):
        raise RuleError(at, "expected {topic: NAME, gte: 0.2} (a share from 0 to 1)")
    ops = {k: v for k, v in value.items() if k != "topic"}
    if len(ops) != 1 or next(iter(ops)) not in {o.value for o in NUMERIC_OPS}:
        raise RuleError(at, "expected one of gt, gte, lt, lte beside the topic")
    op_name, target = next(iter(ops.items()))
    if not in_range(target, 0, 1):
        raise RuleError(f"{at}.{op_name}", "expected a number from 0 to 1")
    return Interest(value["topic"], Op(op_name), float(target))


def _did(value: Any, at: str) -> Did:
    if not isinstance(value, Mapping):
        raise RuleError(at, "expected a touchpoint filter, e.g. {event: page, within_days: 30}")
    rest = dict(value)
    within = _days(rest.pop("within_days", None), f"{at}.within_days")
    then = _then(rest.pop("then"), f"{at}.then") if "then" in rest else None
    counts = {k: rest.pop(k) for k in list(rest) if k in COUNT_OPS}
    if len(counts) > 1:
        raise RuleError(at, "one count_… condition at most")
    op, count = Op.GTE, 1
    if counts:
        name, count = next(iter(counts.items()))
        if not isinstance(count, int) or not in_range(count, 0, MAX_COUNT):
            raise RuleError(f"{at}.{name}", f"expected a whole number from 0 to {MAX_COUNT}")
        op = COUNT_OPS[name]
    when = parse_when(rest, at, scope="touchpoint") if rest else When(())
    return Did(when, within, op, count, then)


def _then(value: Any, at: str) -> Then:
    if at.count(".then") > MAX_STEPS:
        raise RuleError(at[:80] + "…", f"a sequence has at most {MAX_STEPS} steps after the first")
    if not isinstance(value, Mapping):
        raise RuleError(at, "expected the next step, e.g. {event: demo_request, within_days: 14}")
    rest = dict(value)
    within = _days(rest.pop("within_days", None), f"{at}.within_days")
    then = _then(rest.pop("then"), f"{at}.then") if "then" in rest else None
    when = parse_when(rest, at, scope="touchpoint") if rest else When(())
    return Then(when, within, then)


def _days(value: Any, at: str) -> float | None:
    if value is None:
        return None
    if not in_range(value, 0, MAX_DAYS) or value == 0:
        raise RuleError(at, f"expected a positive number of days, at most {MAX_DAYS}")
    return float(value)


def parse_rule(text: str, source: str = "where") -> Node:
    """Return the AST of a ``where`` tree written as YAML (or JSON) text."""
    return parse_where(load_yaml(text, source), source)


def format_rule(node: Node) -> str:
    """Return a tree as canonical YAML text, as docs/segments.md writes it (``all``,
    ``any`` and ``not`` in block style, each condition on one line in flow style):
    ``parse_rule(format_rule(node)) == node``."""
    return "".join(line + "\n" for line in _lines(rule_data(node)))


def _lines(data: dict[str, Any]) -> list[str]:
    (key, value), pad = next(iter(data.items())), "  "
    if key in ("all", "any"):
        return [f"{key}:"] + [
            f"{pad}{'- ' if i == 0 else pad}{line}"
            for part in value
            for i, line in enumerate(_lines(part))
        ]
    if key == "not":
        return ["not:"] + [pad + line for line in _lines(value)]
    text = dump_yaml(data, flow=True)
    return [text[1:-2]]  # "{did: {event: page}}\n" without the braces of the outer mapping


def rule_data(node: Node) -> dict[str, Any]:
    """Return a tree as its canonical ``where`` mapping: one form for each condition
    (``{field: {op: value}}``, ``{trait: {name, op: value}}``, counts only when not
    ``count_gte: 1``), which :func:`parse_where` reads as an equal tree. ValueError for a
    tree no mapping gives."""
    if isinstance(node, All | AnyOf):
        return {"all" if isinstance(node, All) else "any": [rule_data(p) for p in node.parts]}
    if isinstance(node, Not):
        return {"not": rule_data(node.part)}
    if isinstance(node, Compare):
        return {node.field: {node.op.value: _written(node.value)}}
    if isinstance(node, Interest):
        return {"interest": {"topic": node.topic, node.op.value: _number_written(node.value)}}
    if isinstance(node, Reachable):
        return {"channel": node.channel}
    if isinstance(node, TraitTest):
        return when_data(When((node.condition,)))
    data = _step_data(node.filter, node.within_days, node.then)
    if (node.op, node.count) != (Op.GTE, 1):
        data[_COUNT_KEYS[node.op]] = node.count
    return {"did": data}


_COUNT_KEYS = {op: key for key, op in COUNT_OPS.items()}


def _step_data(when: When, within: float | None, then: Then | None) -> dict[str, Any]:
    data = when_data(when)
    if within is not None:
        data["within_days"] = _number_written(within)
    if then is not None:
        data["then"] = _step_data(then.filter, then.within_days, then.then)
    return data


def _written(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def _number_written(value: float) -> float | int:
    """A number the parser makes a float, written as an int when it is one (30, not 30.0)."""
    return int(value) if value.is_integer() else value


def conditions(node: Node, source: Any, path: str = "where") -> list[tuple[str, Any, Node]]:
    """Return the tree's conditions (every node but ``all``/``any``) with their path and
    what was written for them: ``[("where.all[1]", {"score": {"gte": 50}}, node), …]``.
    A ``not`` is one condition (its part is what it denies)."""
    if isinstance(node, All | AnyOf):
        key = "all" if isinstance(node, All) else "any"
        return [
            c
            for i, (part, written) in enumerate(zip(node.parts, source[key], strict=True))
            for c in conditions(part, written, f"{path}.{key}[{i}]")
        ]
    return [(path, source, node)]
