"""The segment builder's checks: a draft's definition validated, each problem placed at
the condition it concerns, and the definition written as the YAML view shows it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask_babel import lazy_gettext as _l

from dmp.ui.builderform import MAX_DEPTH, MAX_YAML, Draft, FormError, data_draft, draft_data
from segments.definition import SegmentDefinition, parse_definition
from segments.rules import RuleError
from segments.yamltext import dump_yaml, load_yaml

# The language's most frequent problems, in the page's language (others show as written).
PROBLEMS = {
    "expected a number": _l("expected a number"),
    "expected a name": _l("expected a name"),
    "expected lowercase letters, digits and -, up to 64": _l(
        "expected lowercase letters, digits and -, up to 64"
    ),
    "expected a non-empty list of conditions": _l("add at least one condition to this group"),
    "expected a number from 0 to 1": _l("expected a number from 0 to 1"),
    "expected a positive number of days, at most 3650": _l(
        "expected a positive number of days, at most 3650"
    ),
    "expected a whole number from 0 to 1000000": _l("expected a whole number from 0 to 1000000"),
    "expected one condition, e.g. {score: {gte: 50}} or {all: [...]}": _l("expected one condition"),
    "expected a non-empty string": _l("expected some text"),
    "expected a string or a number (from -1e15 to 1e15)": _l("expected a value"),
}


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong, where: ``at`` names the form part (``w-1``) or field (``id``)."""

    at: str
    path: str
    message: str


@dataclass(frozen=True, slots=True)
class Checked:
    """A draft's definition (None if it is not valid), its problems and its YAML text;
    ``shown`` is what the preview evaluates: the definition, or its ``where`` alone (under
    the id ``draft``) while only the id or name is wrong."""

    definition: SegmentDefinition | None
    problems: tuple[Problem, ...]
    yaml: str
    shown: SegmentDefinition | None = None

    def at(self, name: str) -> str:
        """Return the problem at a form part or field ('' if none)."""
        return next((p.message for p in self.problems if p.at == name), "")


def check_draft(draft: Draft, taken: bool = False) -> Checked:
    """Return the draft's definition checked by the segment language (``taken``: a new
    segment's id is in use already)."""
    data, where = draft_data(draft)
    text = definition_yaml(data)
    problems: list[Problem] = []
    if draft.stored and data["id"] != draft.stored:
        problems.append(Problem("id", "segment.id", str(_l("the id of a saved segment stays"))))
    elif taken:
        problems.append(Problem("id", "segment.id", str(_l("a segment with this id exists"))))
    try:
        if _depth(data["where"]) > MAX_DEPTH:
            raise RuleError("where", f"groups nest more than {MAX_DEPTH} levels deep")
        shown = parse_definition({"id": "draft", "where": data["where"]}, new=False)
    except RuleError as exc:
        return Checked(None, (*problems, _placed(exc, where)), text)
    try:
        definition = parse_definition(data, new=not draft.stored)
    except RuleError as exc:
        return Checked(None, (*problems, _placed(exc, where)), text, shown)
    return Checked(None if problems else definition, tuple(problems), text, definition)


def _placed(exc: RuleError, where: dict[str, str]) -> Problem:
    said = str(PROBLEMS.get(exc.problem, exc.problem))
    path = exc.path
    while path and path not in where:
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return Problem(where.get(path, ""), exc.path, said)


def _depth(data: Any, level: int = 0) -> int:
    if level > MAX_DEPTH or not isinstance(data, Mapping) or len(data) != 1:
        return level
    ((key, value),) = data.items()
    if key in ("all", "any") and isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return _depth(value, level + 1) if key == "not" else level


def definition_yaml(data: Mapping[str, Any]) -> str:
    """Return a definition's data as YAML: its fields, then ``where`` with each group in
    block style and each condition on one line (as docs/segments.md writes them)."""
    head = "".join(_lines({k: v})[0] + "\n" for k, v in data.items() if k != "where")
    lines = _lines(data.get("where"))
    return head + "where:\n" + "".join(f"  {line}\n" for line in lines)


def _lines(data: Any) -> list[str]:
    if isinstance(data, Mapping) and len(data) == 1:
        ((key, value),) = data.items()
        if key in ("all", "any") and isinstance(value, list) and value:
            return [f"{key}:"] + [
                f"  {'- ' if i == 0 else '  '}{line}"
                for part in value
                for i, line in enumerate(_lines(part))
            ]
        if key == "not" and isinstance(value, Mapping):
            return ["not:"] + ["  " + line for line in _lines(value)]
    text = dump_yaml(data, flow=True).rstrip("\n")
    if text.endswith("\n..."):  # a bare scalar ends its document
        text = text[: -len("\n...")]
    return [text[1:-1] if isinstance(data, Mapping) and data else text]


def condition_yaml(data: Any) -> str:
    """Return one condition as the YAML view writes it (groups over several lines)."""
    return "\n".join(_lines(data))


def yaml_draft(text: str, stored: str = "") -> Draft:
    """Return the form of a definition written as YAML (FormError says what is wrong)."""
    if len(text) > MAX_YAML:
        raise FormError(f"the YAML is longer than {MAX_YAML:,} characters")
    try:
        data = load_yaml(text, "yaml")
    except RuleError as exc:
        raise FormError(exc.problem) from None
    if not isinstance(data, Mapping):
        raise FormError("expected a mapping with id, name and where")
    if stored and data.get("id", stored) != stored:
        raise FormError(str(_l("the id of a saved segment stays")))
    return data_draft({**data, "id": data.get("id", stored)} if stored else data, stored)
