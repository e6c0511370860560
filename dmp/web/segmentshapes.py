"""What the segments API takes and answers: definitions, ids and pages (:mod:`dmp.web.spec`).

A definition is parsed by the rule language (``segments.definition``; its errors are 422s
naming the path). Its ``where`` is described from the language's own tables (the columns,
their orders and operators, the channels), two levels deep; any other condition of the
language (``did``, ``trait``, ``interest``, text columns, deeper trees) is taken too.
"""

from __future__ import annotations

from typing import Any

from dmp.web.params import JsonBody, Param, WholeNumber
from dmp.web.schema import Either, Flag, Free, ListOf, Obj, Text
from segments.definition import RESERVED_IDS
from segments.language import CHANNELS, NUMBER_FIELDS, ORDERED, TEXT_FIELDS
from segments.rules import MAX_NUMBER, NUMERIC_OPS, Op

MAX_BODY = 64 * 1024  # a definition is a few hundred bytes; a long list of them fits
_ID_PATTERN = "[a-z0-9][a-z0-9-]*"
_COMPARE = sorted(op.value for op in (Op.EQ, Op.NE, *NUMERIC_OPS))


def _one(name: str, value: dict[str, Any]) -> dict[str, Any]:
    """Return the schema of an object with the one member ``name``."""
    return {
        "type": "object",
        "properties": {name: value},
        "required": [name],
        "additionalProperties": False,
    }


def _compared(value: dict[str, Any]) -> dict[str, Any]:
    """Return the schema of ``{op: value}`` for one comparison operator."""
    return {"anyOf": [_one(op, value) for op in _COMPARE]}


def where_schema() -> dict[str, Any]:
    """Return the JSON Schema of a ``where`` condition, from the language's tables."""
    number = {"type": "number", "minimum": -MAX_NUMBER, "maximum": MAX_NUMBER}
    leaves = [
        *(_one(name, _compared({"enum": order})) for name, order in ORDERED.items()),
        *(_one(name, _compared(number)) for name in NUMBER_FIELDS),
        _one("channel", {"enum": list(CHANNELS)}),
    ]
    leaf = {"anyOf": leaves}
    trees = [_one(name, {"type": "array", "items": leaf, "minItems": 1}) for name in ("all", "any")]
    # The conditions with shapes of their own (docs/segments.md), and deeper trees.
    named = ["all", "any", "not", "did", "trait", "interest", *TEXT_FIELDS]
    other = {
        "type": "object",
        "minProperties": 1,
        "maxProperties": 1,
        "propertyNames": {"enum": named},
    }
    return {
        "anyOf": [*leaves, *trees, _one("not", leaf), other],
        "description": "One condition of the segment language (docs/segments.md).",
    }


DEFINITION = Free(
    Obj(
        {
            "id": Text(max_length=64, pattern=_ID_PATTERN, exclude=tuple(sorted(RESERVED_IDS))),
            "name": Text(pattern=r"\s*\S[\s\S]*"),
            "description": Text(),
            "iab": ListOf(Text(pattern="[0-9]{1,6}")),
            "where": Free(where_schema()),
        },
        required=("id", "where"),
        extra=False,
    ).schema(),
    "A segment definition, as in the YAML files (docs/segments.md).",
)
_BODY: dict[str, Any] = dict(
    max_bytes=MAX_BODY,
    strict=True,
    large=f"a segment definition is at most {MAX_BODY} bytes",
)
EXAMPLE = {
    "id": "hot-leads",
    "name": "Hot leads",
    "iab": ["271"],
    "where": {"all": [{"tier": {"gte": "medium"}}, {"score": {"gte": 30}}]},
}
ONE = JsonBody(DEFINITION, **_BODY, example=EXAMPLE)
ONE_OR_MORE = JsonBody(
    Either((Free(DEFINITION.schema()), ListOf(Free(DEFINITION.schema())))),
    **_BODY,
    example=[EXAMPLE],
)
SID = Param(
    "sid",
    Text(max_length=64, pattern=_ID_PATTERN, exclude=tuple(sorted(RESERVED_IDS))),
    "path",
    description="A segment id.",
)
SAMPLE = WholeNumber("sample", 10, 0, 1000, "Members to show with the conditions they met.")
LIMIT = WholeNumber("limit", 100, 1, 10_000, "Members per page.")
OFFSET = WholeNumber("offset", 0, 0, 100_000_000, "Members to skip.")
SEGMENT = Obj(
    {
        "id": Text(),
        "name": Text(),
        "version": Free({"type": "integer"}),
        "definition": Obj(),
        "members": Free({"type": ["integer", "null"]}),
    },
    required=("id", "name", "version", "definition"),
)
DELETED = Obj({"id": Text(), "version": Free({"type": "integer"}), "deleted": Flag()})
MEMBERS = Obj(
    {
        "id": Text(),
        "run_id": Text(),
        "total": Free({"type": "integer"}),
        "offset": Free({"type": "integer"}),
        "members": ListOf(Obj()),
    },
    required=("id", "run_id", "total", "offset", "members"),
)
