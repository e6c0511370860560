"""Segment definitions: an id, a name and a ``where`` tree, read from YAML or JSON.

    id: hot-ma-leads
    name: Hot leads interested in marketing automation
    description: optional, for people
    where: {all: [...]}                  # see segments.language

A file holds one definition, a list of them, or several YAML documents.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from segments.language import Node, parse_where
from segments.rules import RuleError, RuleErrors
from segments.yamltext import load_yaml_documents

_ID = re.compile(r"^[a-z0-9][a-z0-9\-]{0,63}$")
# Paths beside a segment's own: /api/v1/segments/<these> and /ui/segments/<these>.
RESERVED_IDS = frozenset({"overlap", "runs", "plan", "preview", "builder"})
_IAB = re.compile(r"^[0-9]{1,6}$")  # the Audience Taxonomy's unique ids are numbers


@dataclass(frozen=True, slots=True)
class SegmentDefinition:
    """A parsed, valid segment definition (``source`` is what was written, as data)."""

    id: str
    name: str
    description: str
    where: Node
    source: dict[str, Any]
    iab: tuple[str, ...] = ()  # IAB Audience Taxonomy 1.1 ids (OpenRTB segtax 4)

    def canonical(self) -> str:
        """Return the definition as canonical JSON: equal definitions, equal text."""
        return json.dumps(self.source, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_definition(data: Any, path: str = "segment", *, new: bool = True) -> SegmentDefinition:
    """Return the definition a mapping describes (RuleError names the path). ``new``
    applies the checks for what is about to be stored (ids reserved since)."""
    if not isinstance(data, dict):
        raise RuleError(path, "expected a mapping with id, name and where")
    unknown = set(data) - {"id", "name", "description", "iab", "where"}
    if unknown:
        raise RuleError(
            f"{path}.{sorted(unknown)[0]}", "unknown key (id, name, description, iab, where)"
        )
    ident, name = data.get("id"), data.get("name", data.get("id"))
    if not isinstance(ident, str) or not _ID.match(ident):
        raise RuleError(f"{path}.id", "expected lowercase letters, digits and -, up to 64")
    if new and ident in RESERVED_IDS:
        raise RuleError(f"{path}.id", f"{ident!r} is reserved (an API path)")
    if not isinstance(name, str) or not name.strip():
        raise RuleError(f"{path}.name", "expected a name")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise RuleError(f"{path}.description", "expected text")
    if "where" not in data:
        raise RuleError(path, "a segment needs where")
    iab = data.get("iab", [])
    iab = [iab] if isinstance(iab, str | int) and not isinstance(iab, bool) else iab
    if not isinstance(iab, list) or not all(_IAB.match(str(i)) for i in iab):
        raise RuleError(f"{path}.iab", 'expected IAB Audience Taxonomy ids such as ["271"]')
    iab = list(dict.fromkeys(str(i) for i in iab))
    where = parse_where(data["where"], "where")
    source = {"id": ident, "name": name.strip(), "description": description, "where": data["where"]}
    if iab:
        source["iab"] = iab
    return SegmentDefinition(ident, name.strip(), description, where, source, tuple(iab))


def load_definitions(text: str, source: str = "file") -> list[SegmentDefinition]:
    """Return every definition in a YAML/JSON text (ids must not repeat); RuleErrors
    names every definition that cannot be used."""
    documents = [d for d in load_yaml_documents(text, source) if d is not None]
    items = [i for d in documents for i in (d if isinstance(d, list) else [d])]
    if not items:
        raise RuleError(source, "no segment definition in it")
    found, errors = [], []
    for n, item in enumerate(items):  # every bad definition is reported, not just the first
        where = f"{source}[{n}]"
        try:
            found.append(parse_definition(item, where))
        except RuleError as exc:  # each problem names its file and definition
            named = exc.path.startswith(source)
            errors.append(exc if named else RuleError(f"{where}.{exc.path}", exc.problem))
    if errors:
        raise RuleErrors(errors)
    ids = [d.id for d in found]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise RuleError(source, f"segment {twice[0]!r} is defined twice")
    return found
