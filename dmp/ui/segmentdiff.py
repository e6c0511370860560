"""A segment definition as the YAML a marketer reads, and the difference of two versions.

The ``where`` tree is written in its canonical form (:func:`segments.language.format_rule`:
one condition a line), so two versions differ in exactly the lines whose conditions differ.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from segments.language import format_rule, parse_where
from segments.rules import RuleError
from segments.yamltext import dump_yaml

HEAD = ("id", "name", "description", "iab")


@dataclass(frozen=True, slots=True)
class DiffLine:
    """One line of a diff: ``kind`` is same, added or removed."""

    kind: str
    old: int | None  # line number in the older text
    new: int | None  # line number in the newer text
    text: str


def definition_yaml(source: dict[str, Any] | None) -> str:
    """Return a stored definition (as written) as YAML, ``where`` in canonical form ('' for
    a deletion)."""
    if not source:
        return ""
    head = {k: source[k] for k in HEAD if source.get(k) not in (None, "", [])}
    try:
        where = format_rule(parse_where(source["where"], "where"))
    except (RuleError, ValueError, KeyError, RecursionError):  # stored before a check: as is
        return dump_yaml(source)
    body = "".join(f"  {line}\n" for line in where.splitlines())
    return dump_yaml(head) + "where:\n" + body


def version_yaml(entry: dict[str, Any]) -> str:
    """Return one entry of a segment's versions as YAML ('' for a deletion)."""
    return "" if entry.get("deleted") else definition_yaml(entry.get("definition"))


def diff_lines(old: str, new: str) -> list[DiffLine]:
    """Return every line of ``old`` and ``new`` in order, each kept, removed or added."""
    a, b = old.splitlines(), new.splitlines()
    out: list[DiffLine] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            out += [DiffLine("same", i1 + k + 1, j1 + k + 1, a[i1 + k]) for k in range(i2 - i1)]
            continue
        out += [DiffLine("removed", i + 1, None, a[i]) for i in range(i1, i2)]
        out += [DiffLine("added", None, j + 1, b[j]) for j in range(j1, j2)]
    return out


def counts(lines: list[DiffLine]) -> tuple[int, int]:
    """Return how many lines were added and removed."""
    return (
        sum(1 for x in lines if x.kind == "added"),
        sum(1 for x in lines if x.kind == "removed"),
    )
