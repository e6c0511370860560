"""The rule vocabulary as a typed AST, parsed from YAML/JSON mappings with path-named errors.

The scoring model's ``when`` and (later) the segment language share it. Two scopes:

- a **person condition** tests a trait: ``{trait: job_title, matches: "(?i)cmo"}`` or, in
  the segment language's form, ``{trait: {name: employees, gte: 50}}``;
- a **touchpoint filter** tests one touchpoint: ``{event: page, url_contains: /pricing}``,
  ``{event: [open, click], channel: email}``, ``{topic: crm}``,
  ``{property: format, eq: pdf}``. All its keys must hold.

Operators: eq, ne, gt, gte, lt, lte, in, not_in, contains, matches, exists.
Nothing here touches data; :mod:`segments.compiler` turns the AST into polars expressions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import polars as pl


class RuleError(ValueError):
    """A rule that cannot be used; the message names where (``activity.rules[2].when``)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = path, problem


class RuleErrors(RuleError):
    """Several definitions that cannot be used: every problem, in the order found."""

    def __init__(self, errors: Sequence[RuleError]) -> None:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(errors[0].path, f"{errors[0].problem}{more}")
        self.errors = tuple(errors)


class Op(str, Enum):
    """How a value is compared."""

    EQ = "eq"
    NE = "ne"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    IN = "in"
    NOT_IN = "not_in"
    CONTAINS = "contains"
    MATCHES = "matches"
    EXISTS = "exists"


NUMERIC_OPS = frozenset({Op.GT, Op.GTE, Op.LT, Op.LTE})
LIST_OPS = frozenset({Op.IN, Op.NOT_IN})
# Numbers a rule compares with: beyond any score, count or trait value (revenue in cents
# included) and still exact as a float; a bigger one (or inf, nan) breaks evaluation.
MAX_NUMBER = 10**15


class Attr(str, Enum):
    """What a condition reads: a touchpoint's column, or a named trait or property."""

    EVENT = "event"
    TYPE = "type"
    SOURCE = "source"
    CHANNEL = "channel"
    SITE = "site"
    URL = "url"
    TITLE = "title"
    TOPIC = "topic"  # a touchpoint's topics hold the value
    PROPERTY = "property"  # an event property, by name
    TRAIT = "trait"  # a person's trait, by name


TOUCHPOINT_ATTRS = frozenset(Attr) - {Attr.TRAIT}


@dataclass(frozen=True, slots=True)
class Condition:
    """One attribute compared with one operator (``name`` only for traits and properties)."""

    attr: Attr
    op: Op
    value: Any
    name: str = ""

    def describe(self) -> str:
        """Return the condition as a marketer reads it: ``job_title matches (?i)cmo``."""
        subject = self.name if self.attr in (Attr.TRAIT, Attr.PROPERTY) else self.attr.value
        if self.op is Op.EXISTS:
            return f"{subject} {'exists' if self.value else 'missing'}"
        shown = ",".join(map(str, self.value)) if isinstance(self.value, list) else self.value
        return f"{subject} {self.op.value} {shown}"


@dataclass(frozen=True, slots=True)
class When:
    """Conditions that must all hold (an empty one always holds)."""

    conditions: tuple[Condition, ...]

    def describe(self) -> str:
        """Return the conditions joined by ``and``."""
        return " and ".join(c.describe() for c in self.conditions) or "always"

    @property
    def on_person(self) -> bool:
        """Return whether this speaks of the person (traits) rather than a touchpoint."""
        return any(c.attr is Attr.TRAIT for c in self.conditions)


# Keys of a touchpoint filter that are shorthand for one condition on one column.
_SHORTHAND: dict[str, tuple[Attr, Op]] = {
    "event": (Attr.EVENT, Op.EQ),
    "type": (Attr.TYPE, Op.EQ),
    "source": (Attr.SOURCE, Op.EQ),
    "channel": (Attr.CHANNEL, Op.EQ),
    "site": (Attr.SITE, Op.EQ),
    "url": (Attr.URL, Op.EQ),
    "url_contains": (Attr.URL, Op.CONTAINS),
    "url_matches": (Attr.URL, Op.MATCHES),
    "title_contains": (Attr.TITLE, Op.CONTAINS),
    "topic": (Attr.TOPIC, Op.EQ),
}
# The key each shorthand condition is written with (a list value for eq is in).
_WRITTEN = {(attr, op): key for key, (attr, op) in _SHORTHAND.items()}
_WRITTEN |= {(attr, Op.IN): key for key, (attr, op) in _SHORTHAND.items() if op is Op.EQ}
_NAMED = {"trait": Attr.TRAIT, "property": Attr.PROPERTY}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")


def parse_when(data: Any, path: str, *, scope: str) -> When:
    """Return the ``When`` of a mapping; ``scope`` is ``person`` or ``touchpoint``."""
    if not isinstance(data, Mapping) or not data:
        raise RuleError(path, "expected a mapping of conditions, e.g. {event: page}")
    ops = {k: v for k, v in data.items() if k in Op._value2member_map_}
    named = [k for k in data if k in _NAMED]
    unknown = [k for k in data if k not in ops and k not in _NAMED and k not in _SHORTHAND]
    if unknown:
        known = ", ".join(sorted([*_SHORTHAND, *_NAMED]))
        raise RuleError(f"{path}.{unknown[0]}", f"unknown key (known: {known} and operators)")
    if len(named) > 1:
        raise RuleError(path, "one of trait or property per condition set")
    if ops and not named:
        raise RuleError(f"{path}.{next(iter(ops))}", "an operator needs a trait or property")
    conditions: list[Condition] = []
    for key, value in data.items():
        if key in _SHORTHAND:
            attr, op = _SHORTHAND[key]
            if isinstance(value, list) and op is Op.EQ:
                op = Op.IN
            conditions.append(make_condition(attr, op, value, "", f"{path}.{key}"))
        elif key in _NAMED:
            conditions += _named(_NAMED[key], value, ops, f"{path}.{key}")
    when = When(tuple(conditions))
    if scope == "person" and any(c.attr is not Attr.TRAIT for c in conditions):
        raise RuleError(path, "a fit rule speaks of the person: use trait conditions")
    if scope == "touchpoint" and when.on_person:
        raise RuleError(path, "an activity rule speaks of a touchpoint: no trait conditions")
    return when


def when_data(when: When) -> dict[str, Any]:
    """Return the canonical mapping of a ``When``, which :func:`parse_when` reads back as
    an equal ``When``: shorthand keys, and each trait or property as ``{name, ops…}``.
    ValueError if no mapping gives it (two names, or one key twice)."""
    data: dict[str, Any] = {}
    for c in when.conditions:
        if c.attr in (Attr.TRAIT, Attr.PROPERTY):
            other = any(k in _NAMED and k != c.attr.value for k in data)
            named = data.setdefault(c.attr.value, {"name": c.name})
            if other or named["name"] != c.name or c.op.value in named:
                raise ValueError(f"one mapping holds one trait or property: {when.describe()!r}")
            named[c.op.value] = list(c.value) if isinstance(c.value, list) else c.value
            continue
        key = _WRITTEN.get((c.attr, c.op))
        if key is None or key in data or isinstance(c.value, list) != (c.op is Op.IN):
            raise ValueError(f"no mapping holds {c.describe()!r} here: {when.describe()!r}")
        data[key] = list(c.value) if isinstance(c.value, list) else c.value
    return data


def _named(attr: Attr, value: Any, siblings: dict[str, Any], path: str) -> list[Condition]:
    """Conditions on a named trait or property, in either form the vocabulary allows."""
    if isinstance(value, Mapping):  # {trait: {name: country, in: [DE, AT]}}
        if siblings:
            raise RuleError(path, "give the operators inside the mapping or beside it, not both")
        rest = {k: v for k, v in value.items() if k != "name"}
        bad = [k for k in rest if k not in Op._value2member_map_]
        if bad:
            raise RuleError(f"{path}.{bad[0]}", "unknown operator")
        name, ops = value.get("name"), rest
    else:  # {trait: job_title, matches: "…"}
        name, ops = value, siblings
    if not isinstance(name, str) or not _NAME.match(name):
        raise RuleError(path, "expected a name of letters, digits, _ . or -")
    if not ops:
        return [Condition(attr, Op.EXISTS, True, name)]
    return [make_condition(attr, Op(op), v, name, f"{path}.{op}") for op, v in ops.items()]


def make_condition(attr: Attr, op: Op, value: Any, name: str, path: str) -> Condition:
    """Return a condition after checking that its value suits its operator (else a
    RuleError at ``path``)."""
    if op in NUMERIC_OPS:
        check_number(value, path)
    elif op in LIST_OPS:
        if not isinstance(value, list) or not value or not all(map(_scalar, value)):
            raise RuleError(
                path, "expected a non-empty list of strings or numbers (from -1e15 to 1e15)"
            )
    elif op is Op.EXISTS:
        if not isinstance(value, bool):
            raise RuleError(path, "expected true or false")
    elif op is Op.MATCHES:
        if not isinstance(value, str):
            raise RuleError(path, "expected a regular expression")
        check_pattern(value, path)
    elif op is Op.CONTAINS:
        if not isinstance(value, str) or not value:
            raise RuleError(path, "expected a non-empty string")
    elif not _scalar(value):
        raise RuleError(path, "expected a string or a number (from -1e15 to 1e15)")
    return Condition(attr, op, value, name)


def _scalar(value: Any) -> bool:
    return isinstance(value, str) or in_range(value, -MAX_NUMBER, MAX_NUMBER)


def in_range(value: Any, low: float, high: float) -> bool:
    """Return whether ``value`` is a finite number (never true/false) from low to high."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return low <= value <= high  # exact for ints of any size


def check_number(value: Any, path: str) -> int | float:
    """Return ``value`` if it is a number a rule can compare with (finite, within
    ±MAX_NUMBER, not true/false), else raise a RuleError at ``path``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RuleError(path, "expected a number")
    if not in_range(value, -MAX_NUMBER, MAX_NUMBER):
        raise RuleError(path, "expected a number from -1e15 to 1e15")
    return value


def check_pattern(pattern: str, path: str) -> None:
    """Raise unless polars (Rust regex syntax, not Python's) accepts ``pattern``."""
    try:
        pl.select(pl.lit("").str.contains(pattern))
    except pl.exceptions.PolarsError as exc:
        said = " ".join(str(exc).split())[:160] or "invalid"
        raise RuleError(path, f"not a regular expression polars can use ({said})") from None
