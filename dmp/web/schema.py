"""JSON shapes: each checks a value the way a route needs it and describes itself as the
JSON Schema (2020-12, as OpenAPI 3.1 takes it) of what it checks.

A route's request bodies and parameters are declared once with these, so the validation
and the OpenAPI document (:mod:`dmp.web.openapi`) cannot drift apart. ``check`` returns the
value (a mapping with its checked fields) or raises :class:`Invalid` naming the path.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class Invalid(ValueError):
    """A value that is not what its shape takes; ``str()`` is ``"<path>: <reason>"`` (the
    reason alone at the top, or where it names the path itself)."""

    def __init__(self, path: str, reason: str, *, whole: bool = False) -> None:
        super().__init__(reason if whole or not path else f"{path}: {reason}")
        self.path, self.reason = path, reason


def _invalid(path: str, message: str, reason: str) -> Invalid:
    """Return the Invalid of a shape: its own ``message`` if it has one (``{path}`` in it
    stands for the path), else ``reason``."""
    if "{path}" in message:
        return Invalid(path, message.replace("{path}", path), whole=True)
    return Invalid(path, message or reason)


class Shape(Protocol):
    """What every shape does: check a value, and describe what it takes."""

    def check(self, value: Any, path: str) -> Any:
        """Return the checked value; raise Invalid naming ``path``."""
        ...

    def schema(self) -> dict[str, Any]:
        """Return the JSON Schema of the values taken."""
        ...


def _types(kinds: list[str], nullable: bool) -> str | list[str]:
    kinds = [*kinds, "null"] if nullable else kinds
    return kinds[0] if len(kinds) == 1 else kinds


def _described(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {**schema, "description": description} if description else schema


@dataclass(frozen=True, slots=True)
class Text:
    """A string: at most ``max_length`` characters, matching ``pattern``, one of ``enum``,
    printable only; with ``numbers`` a JSON number is taken too (returned as its text)."""

    max_length: int | None = None
    min_length: int = 0
    pattern: str | None = None
    enum: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()  # values that are never taken
    printable: bool = False
    numbers: bool = False
    nullable: bool = False  # JSON null is taken (and returned) as absent
    description: str = ""
    message: str = ""  # the reason a mismatch gives, instead of the generic one

    def check(self, value: Any, path: str) -> str | None:
        """Return the text of ``value`` (Invalid if it is no string the shape takes)."""
        if value is None and self.nullable:
            return None
        if self.numbers and isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise _invalid(path, self.message, "expected a string")
        if self.enum and value not in self.enum:
            raise _invalid(path, self.message, f"expected one of {', '.join(self.enum)}")
        if value in self.exclude:
            raise _invalid(path, self.message, f"{value!r} is reserved")
        if len(value) < self.min_length:
            raise _invalid(path, self.message, f"at least {self.min_length} characters")
        if self.max_length is not None and len(value) > self.max_length:
            raise _invalid(path, self.message, f"at most {self.max_length} characters")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise _invalid(path, self.message, f"expected text matching {self.pattern}")
        if self.printable and not value.isprintable():  # no "\ud800", NUL or newline
            raise _invalid(path, self.message, "expected printable characters")
        return value

    def schema(self) -> dict[str, Any]:
        """Return the JSON Schema of the strings (and numbers) taken."""
        kinds = ["string", "number"] if self.numbers else ["string"]
        out: dict[str, Any] = {"type": _types(kinds, self.nullable)}
        if self.enum:
            out["enum"] = list(self.enum)
        if self.exclude:
            out["not"] = {"enum": list(self.exclude)}
        if self.min_length:
            out["minLength"] = self.min_length
        if self.max_length is not None:
            out["maxLength"] = self.max_length
        if self.pattern is not None:
            out["pattern"] = f"^(?:{self.pattern})$"  # fullmatch, as check()
        return _described(out, self.description)


@dataclass(frozen=True, slots=True)
class Number:
    """A JSON number (no boolean) within [low, high); ``whole`` takes integers only."""

    low: float = -math.inf
    high: float = math.inf
    whole: bool = False
    nullable: bool = False
    description: str = ""
    message: str = ""

    def check(self, value: Any, path: str) -> int | float | None:
        """Return the number (Invalid for anything else, NaN included)."""
        if value is None and self.nullable:
            return None
        kinds = int if self.whole else int | float
        # The negated range test also refuses NaN, which Python's JSON reader lets through.
        if isinstance(value, bool) or not isinstance(value, kinds) or not self.low <= value:
            raise _invalid(path, self.message, "expected a number")
        if not value < self.high:
            raise _invalid(path, self.message, f"expected a number below {self.high:g}")
        return value

    def schema(self) -> dict[str, Any]:
        """Return the JSON Schema of the numbers taken."""
        kind = "integer" if self.whole else "number"
        out: dict[str, Any] = {"type": _types([kind], self.nullable)}
        if self.low != -math.inf:
            out["minimum"] = self.low
        if self.high != math.inf:
            out["exclusiveMaximum"] = self.high
        return _described(out, self.description)


@dataclass(frozen=True, slots=True)
class Flag:
    """A JSON boolean."""

    description: str = ""

    def check(self, value: Any, path: str) -> bool:
        """Return the boolean (Invalid for anything else)."""
        if not isinstance(value, bool):
            raise Invalid(path, "expected true or false")
        return value

    def schema(self) -> dict[str, Any]:
        """Return ``{"type": "boolean"}``."""
        return _described({"type": "boolean"}, self.description)


@dataclass(frozen=True, slots=True)
class Free:
    """Any JSON value a later reader checks (such as a segment's ``where`` tree, which the
    rule language parses); ``described`` is its JSON Schema, for the document only."""

    described: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def check(self, value: Any, path: str) -> Any:  # noqa: ARG002
        """Return ``value`` unchecked."""
        return value

    def schema(self) -> dict[str, Any]:
        """Return the JSON Schema the value is described by."""
        return _described(dict(self.described), self.description)


@dataclass(frozen=True, slots=True)
class ListOf:
    """A JSON array of ``min_items`` to ``max_items`` items of one shape."""

    item: Shape
    min_items: int = 0
    max_items: int | None = None
    description: str = ""
    message: str = ""

    def check(self, value: Any, path: str) -> list[Any]:
        """Return the list of checked items (Invalid names the first bad item)."""
        if not isinstance(value, list):
            raise _invalid(path, self.message, "expected a list")
        if len(value) < self.min_items or len(value) > (self.max_items or len(value)):
            raise _invalid(path, self.message, "expected a list")
        return [self.item.check(item, f"{path}[{i}]") for i, item in enumerate(value)]

    def schema(self) -> dict[str, Any]:
        """Return the JSON Schema of the arrays taken."""
        out: dict[str, Any] = {"type": "array", "items": self.item.schema()}
        if self.min_items:
            out["minItems"] = self.min_items
        if self.max_items is not None:
            out["maxItems"] = self.max_items
        return _described(out, self.description)


@dataclass(frozen=True, slots=True)
class Obj:
    """A JSON object with these fields (each optional unless ``required``); other members
    are kept unchecked with ``extra``, else refused."""

    fields: Mapping[str, Shape] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    extra: bool = True
    description: str = ""
    nullable: bool = False  # JSON null reads as {} (an absent object)
    message: str = ""

    def check(self, value: Any, path: str) -> dict[str, Any]:
        """Return the object with its known fields checked (Invalid names the path)."""
        if value is None and self.nullable:
            return {}
        if not isinstance(value, dict):
            raise _invalid(path, self.message, "expected an object")
        for name in self.required:
            if name not in value:
                if name in self.fields:  # its own message says what is expected
                    self.fields[name].check(None, _member(path, name))
                raise Invalid(_member(path, name), "missing")
        if not self.extra and not set(value) <= set(self.fields):
            unknown = sorted(set(value) - set(self.fields))[0]
            raise Invalid(_member(path, unknown), f"unknown member ({', '.join(self.fields)})")
        out = dict(value)
        for name, shape in self.fields.items():
            if name in value:
                out[name] = shape.check(value[name], _member(path, name))
        return out

    def schema(self) -> dict[str, Any]:
        """Return the JSON Schema of the objects taken."""
        out: dict[str, Any] = {"type": _types(["object"], self.nullable)}
        if self.fields:
            out["properties"] = {name: shape.schema() for name, shape in self.fields.items()}
        if self.required:
            out["required"] = list(self.required)
        if not self.extra:
            out["additionalProperties"] = False
        return _described(out, self.description)


def _member(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name  # a body's members are named bare


@dataclass(frozen=True, slots=True)
class Either:
    """One of several shapes, tried in order (the first that takes the value wins)."""

    shapes: tuple[Shape, ...]
    description: str = ""

    def check(self, value: Any, path: str) -> Any:
        """Return what the first shape that takes ``value`` returns (else its Invalid)."""
        first: Invalid | None = None
        for shape in self.shapes:
            try:
                return shape.check(value, path)
            except Invalid as exc:
                first = first or exc
        raise first or Invalid(path, "expected a value")

    def schema(self) -> dict[str, Any]:
        """Return ``anyOf`` the shapes' schemas."""
        return _described({"anyOf": [shape.schema() for shape in self.shapes]}, self.description)
