"""The segment builder's conditions: each kind's form fields and the data they write.

A condition of the form is a :class:`Part`: its kind (``tier``, ``number``, ``did`` …)
and the text of its fields, exactly as posted. :func:`part_data` writes the segment
language's mapping for it; :func:`data_part` reads a mapping back into a part, and keeps
whatever the form cannot show exactly (a ``did`` on a property, ``trait: crm_id``) as a
read-only ``raw`` part, so that nothing a definition says is ever dropped or changed.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from segments.language import CHANNELS, NUMBER_FIELDS, ORDERED, TEXT_FIELDS

GROUPS = ("all", "any", "not")
CONDITIONS = ("tier", "stage", "number", "interest", "channel", "text", "trait", "did")
ORDER_OPS = ("gte", "gt", "lte", "lt", "eq", "ne", "in", "not_in")
NUMBER_OPS = ("gte", "gt", "lte", "lt", "eq", "ne")
INTEREST_OPS = ("gte", "gt", "lte", "lt")
TEXT_OPS = ("eq", "ne", "contains", "matches", "in", "not_in", "exists", "missing")
TRAIT_OPS = ("eq", "ne", "gte", "gt", "lte", "lt", *TEXT_OPS[2:])
COUNT_OPS = ("count_gte", "count_gt", "count_lte", "count_lt", "count_eq")
LIST_OPS = ("in", "not_in")
# The fields each kind posts (``values`` is a list: the checkboxes of tiers or stages;
# ``bare`` remembers the short form ``tier: high`` / ``trait: crm_id`` while eq / exists).
FIELDS: dict[str, tuple[str, ...]] = {
    "tier": ("op", "value", "values", "bare"),
    "stage": ("op", "value", "values", "bare"),
    "number": ("field", "op", "value", "bare"),
    "interest": ("topic", "op", "value"),
    "channel": ("value",),
    "text": ("field", "op", "value", "bare"),
    "trait": ("name", "op", "value", "bare"),
    "did": (
        "event",
        "url_contains",
        "topic",
        "channel",
        "within",
        "count_op",
        "count",
        "then_event",
        "then_within",
    ),
    "raw": ("json",),
}
DEFAULTS: dict[str, dict[str, Any]] = {
    "tier": {"op": "gte", "value": "medium", "values": []},
    "stage": {"op": "in", "value": "mql", "values": ["mql"]},
    "number": {"field": "score", "op": "gte", "value": ""},
    "interest": {"topic": "", "op": "gte", "value": "0.2"},
    "channel": {"value": "email"},
    "text": {"field": "country", "op": "eq", "value": ""},
    "trait": {"name": "", "op": "eq", "value": ""},
    "did": {"event": "", "within": "30", "count_op": "count_gte"},
}
_INT = re.compile(r"^[-+]?[0-9]{1,16}$")
_FLOAT = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]{1,3})?$")


@dataclass(frozen=True, slots=True)
class Part:
    """One part of the form: a group (``all``/``any``/``not``) or a condition's fields."""

    kind: str
    values: Mapping[str, Any] = field(default_factory=dict)
    parts: tuple[Part, ...] = ()

    @property
    def group(self) -> bool:
        """Return whether this part holds parts."""
        return self.kind in GROUPS

    def get(self, name: str) -> Any:
        """Return a field's posted text ('' when not posted; [] for ``values``)."""
        return self.values.get(name, [] if name == "values" else "")


def new_part(kind: str) -> Part:
    """Return a fresh condition of a kind, or a group with one fresh condition in it."""
    if kind in GROUPS:
        return Part(kind, {}, (new_part("tier"),))
    return Part(kind, dict(DEFAULTS.get(kind, {})))


def settled(part: Part) -> Part:
    """Return a posted part with a tier's or stage's value kept when its operator moves
    between one value and a list (the other field was not posted)."""
    if part.kind not in ORDERED:
        return part
    listed = part.get("op") in LIST_OPS
    value, values = part.get("value"), list(part.get("values"))
    if listed and not values and value:
        values = [value]
    if not listed and not value:
        value = values[0] if values else ORDERED[part.kind][0]
    return Part(part.kind, {**part.values, "value": value, "values": values})


def part_data(part: Part) -> Any:
    """Return the segment language's mapping for one condition (not a group)."""
    kind, get = part.kind, part.get
    if get("bare") and get("op") in ("eq", "exists"):
        short = get("name").strip() if kind == "trait" else get("value")
        return {get("field") or kind: number(short) if kind == "number" else short}
    if kind in ORDERED:
        op = get("op")
        return {kind: {op: list(get("values")) if op in LIST_OPS else get("value")}}
    if kind == "number":
        return {get("field"): {get("op"): number(get("value"))}}
    if kind == "interest":
        return {"interest": {"topic": get("topic").strip(), get("op"): number(get("value"))}}
    if kind == "channel":
        return {"channel": get("value")}
    if kind == "text":
        return {get("field"): _compared(get("op"), get("value"), typed=False)}
    if kind == "trait":
        return {"trait": {"name": get("name").strip(), **_compared(get("op"), get("value"))}}
    if kind == "did":
        return {"did": _did_data(part)}
    return _raw(get("json"))


def _compared(op: str, text: str, typed: bool = True) -> dict[str, Any]:
    if op in ("exists", "missing"):
        return {"exists": op == "exists"}
    if op in LIST_OPS:
        return {op: [scalar(t) if typed else t for t in split(text)]}
    if op in ("gt", "gte", "lt", "lte"):
        return {op: number(text)}
    if op in ("contains", "matches"):
        return {op: text}
    return {op: scalar(text) if typed else text}


def _did_data(part: Part) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key in ("event", "topic", "channel"):
        if one_or_many(part.get(key)) is not None:
            data[key] = one_or_many(part.get(key))
    if part.get("url_contains"):
        data["url_contains"] = part.get("url_contains")
    if part.get("within").strip():
        data["within_days"] = number(part.get("within"))
    if part.get("count").strip():
        data[part.get("count_op") or "count_gte"] = number(part.get("count"))
    then: dict[str, Any] = {}
    if one_or_many(part.get("then_event")) is not None:
        then["event"] = one_or_many(part.get("then_event"))
    if part.get("then_within").strip():
        then["within_days"] = number(part.get("then_within"))
    if then:
        data["then"] = then
    return data


def _raw(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def data_part(data: Any) -> Part:
    """Return the form part that writes exactly ``data`` (a ``raw`` part if none does)."""
    try:
        part = _candidate(data)
    except (TypeError, ValueError, AttributeError, KeyError):
        part = None
    if part is not None and same(part_data(part), data):
        return part
    return Part("raw", {"json": json.dumps(data, ensure_ascii=False)})


def same(a: Any, b: Any) -> bool:
    """Return whether two data trees are equal as JSON (``1`` is not ``1.0`` nor ``true``)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _candidate(data: Any) -> Part | None:
    if not isinstance(data, Mapping) or len(data) != 1:
        return None
    ((key, value),) = data.items()
    if not isinstance(value, Mapping) and (
        key in ORDERED or key in NUMBER_FIELDS or key in TEXT_FIELDS
    ):
        return _short(key, value)
    if key == "trait" and isinstance(value, str):
        return Part("trait", {"name": value, "op": "exists", "value": "", "bare": "1"})
    ops = dict(value) if isinstance(value, Mapping) else {}
    op, target = next(iter(ops.items())) if len(ops) == 1 else ("", None)
    if key in ORDERED:
        listed = op in LIST_OPS
        values = {"value": "" if listed else target, "values": target if listed else []}
        return Part(key, {"op": op, **values})
    if key in NUMBER_FIELDS:
        return Part("number", {"field": key, "op": op, "value": text(target)})
    if key in TEXT_FIELDS:
        return Part("text", {"field": key, **_op_text(op, target)})
    if key == "interest":
        ops.pop("topic", None)
        op, target = next(iter(ops.items())) if len(ops) == 1 else ("", None)
        return Part("interest", {"topic": value["topic"], "op": op, "value": text(target)})
    if key == "channel":
        return Part("channel", {"value": value})
    if key == "trait":
        rest = {k: v for k, v in ops.items() if k != "name"}
        op, target = next(iter(rest.items())) if len(rest) == 1 else ("", None)
        return Part("trait", {"name": ops["name"], **_op_text(op, target)})
    if key == "did":
        return _did_part(ops)
    return None


def _short(key: str, value: Any) -> Part:
    kind = key if key in ORDERED else "number" if key in NUMBER_FIELDS else "text"
    values = {"op": "eq", "value": text(value), "values": [], "bare": "1"}
    return Part(kind, values if key in ORDERED else {"field": key, **values})


def _op_text(op: str, target: Any) -> dict[str, str]:
    if op == "exists":
        return {"op": "exists" if target is True else "missing", "value": ""}
    return {"op": op, "value": text(target)}


def _did_part(data: dict[str, Any]) -> Part:
    counts = [k for k in data if k in COUNT_OPS]
    then = data.get("then") if isinstance(data.get("then"), Mapping) else {}
    values = {
        "event": text(data.get("event", "")),
        "url_contains": data.get("url_contains", ""),
        "topic": text(data.get("topic", "")),
        "channel": text(data.get("channel", "")),
        "within": text(data.get("within_days", "")),
        "count_op": counts[0] if counts else "count_gte",
        "count": text(data[counts[0]]) if counts else "",
        "then_event": text(then.get("event", "")),
        "then_within": text(then.get("within_days", "")),
    }
    return Part("did", values)


def text(value: Any) -> str:
    """Return a value as the form shows it (a list as ``a, b``)."""
    if isinstance(value, list):
        return ", ".join(text(v) for v in value)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return str(value)


def split(value: str) -> list[str]:
    """Return the items of a comma-separated field, trimmed, empty ones left out."""
    return [item.strip() for item in value.split(",") if item.strip()]


def one_or_many(value: str) -> str | list[str] | None:
    """Return one item as itself, several as a list, none as None."""
    items = split(value)
    return None if not items else items[0] if len(items) == 1 else items


def number(value: str) -> Any:
    """Return a field's number (None when empty; the text itself when it is none, for the
    language to name the problem)."""
    value = value.strip()
    if not value:
        return None
    if _INT.match(value):
        return int(value)
    if _FLOAT.match(value) and math.isfinite(float(value)):
        return float(value)
    return value


def scalar(value: str) -> Any:
    """Return a field's value for eq/ne/in: a number if it reads as one, else the text."""
    found = number(value)
    return found if isinstance(found, int | float) else value.strip()


OPS = {
    "tier": ORDER_OPS,
    "stage": ORDER_OPS,
    "number": NUMBER_OPS,
    "interest": INTEREST_OPS,
    "text": TEXT_OPS,
    "trait": TRAIT_OPS,
}
CHOICES = {
    "tier": ORDERED["tier"],
    "stage": ORDERED["stage"],
    "number": NUMBER_FIELDS,
    "text": TEXT_FIELDS,
    "channel": CHANNELS,
    "count": COUNT_OPS,
}
