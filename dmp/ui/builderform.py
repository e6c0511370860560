"""The segment builder's form as a tree: posted fields in, a definition's data out.

Field names carry the part's path: ``w`` is the root group, ``w-0-1`` the second part
of the root's first part; ``w-0-1-kind`` says what that part is and ``w-0-1-op``,
``w-0-1-value`` … hold its fields (:mod:`dmp.ui.builderparts`). :func:`read_draft`
reads a posted form, :func:`draft_data` writes the definition's data (and where each
of its paths sits in the form, so that an error names the right condition), and
:func:`data_draft` turns a definition (stored, or written as YAML) into a form.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from werkzeug.datastructures import MultiDict

from dmp.ui.builderparts import (
    CONDITIONS,
    FIELDS,
    GROUPS,
    Part,
    data_part,
    new_part,
    part_data,
    settled,
)

ROOT = "w"
META = ("id", "name", "description", "iab")
MAX_PARTS = 200  # conditions and groups in one definition
MAX_DEPTH = 20  # groups inside groups (the language allows 64; no marketer needs 20)
MAX_FIELD = 2_000  # characters of one field
MAX_YAML = 64 * 1024  # characters of the YAML view (and of a read-only block)
_KIND = re.compile(rf"^w((?:-[0-9]{{1,3}}){{0,{MAX_DEPTH + 1}}})-kind$")


class FormError(ValueError):
    """A posted form the builder will not read (the message says why, for people)."""


@dataclass(frozen=True, slots=True)
class Draft:
    """What the builder holds: the segment's id, name, description, IAB ids and tree.

    ``bare`` says the definition's ``where`` is one condition, not a group: the root
    then writes its only part as it is.
    """

    meta: Mapping[str, str]
    root: Part
    bare: bool = False
    stored: str = ""  # the id of the stored segment being edited ('' for a new one)


def empty_draft(stored: str = "") -> Draft:
    """Return a fresh builder: no id yet, a root ``all`` group with one condition."""
    return Draft({k: "" for k in META}, Part("all", {}, (new_part("tier"),)), False, stored)


def read_draft(form: MultiDict[str, str]) -> Draft:
    """Return the draft a posted builder form holds (FormError if it is out of bounds)."""
    if len(form) > MAX_PARTS * 12:
        raise FormError("too many fields")
    paths: dict[tuple[int, ...], str] = {}
    for key in form:
        found = _KIND.match(key)
        if found:
            paths[tuple(int(i) for i in found.group(1).split("-")[1:])] = form[key]
        elif key.startswith("w-") and key.endswith("-kind"):
            raise FormError(f"groups nest at most {MAX_DEPTH} levels deep")
    if len(paths) > MAX_PARTS + 1:
        raise FormError(f"at most {MAX_PARTS} conditions and groups")
    meta = {k: _field(form, k) for k in META}
    if paths.get(()) not in ("all", "any"):
        paths[()] = "all"
    root = _part(form, paths, (), _children(form, paths))
    bare = form.get("bare") == "1"
    return Draft(meta, root, bare, _field(form, "stored"))


def _children(
    form: MultiDict[str, str], paths: dict[tuple[int, ...], str]
) -> dict[tuple[int, ...], list[tuple[int, ...]]]:
    found: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
    for path in sorted(paths):
        if path:
            found.setdefault(path[:-1], []).append(path)
    return found


def _part(
    form: MultiDict[str, str],
    paths: dict[tuple[int, ...], str],
    path: tuple[int, ...],
    children: dict[tuple[int, ...], list[tuple[int, ...]]],
) -> Part:
    kind, name = paths[path], "-".join([ROOT, *map(str, path)])
    if kind in GROUPS:
        parts = tuple(_part(form, paths, p, children) for p in children.get(path, []))
        return Part(kind, {}, parts)
    if kind not in FIELDS:
        raise FormError(f"{name}: unknown kind of condition")
    if form.get(f"{name}-was", kind) != kind:  # a new kind chosen: its fields start afresh
        return new_part(kind)
    values: dict[str, Any] = {}
    limit = MAX_YAML if kind == "raw" else MAX_FIELD
    for field in FIELDS[kind]:
        key = f"{name}-{field}"
        if field == "values":
            values[field] = [_cap(v, limit) for v in form.getlist(key)]
        else:
            values[field] = _cap(form.get(key, ""), limit)
    return settled(Part(kind, values))


def _field(form: MultiDict[str, str], key: str) -> str:
    return _cap(form.get(key, ""), MAX_YAML if key == "description" else MAX_FIELD)


def _cap(value: str, limit: int) -> str:
    if len(value) > limit:
        raise FormError(f"a field holds more than {limit:,} characters")
    return value


def draft_data(draft: Draft) -> tuple[dict[str, Any], dict[str, str]]:
    """Return the definition's data and, for each path in it (``where.all[1]``), the
    form part it comes from (``w-1``); ``segment.name`` and the like name the fields."""
    where: dict[str, str] = {}
    data: dict[str, Any] = {"id": draft.meta.get("id", "").strip()}
    if draft.meta.get("name", "").strip():
        data["name"] = draft.meta["name"].strip()
    if draft.meta.get("description", ""):
        data["description"] = draft.meta["description"]
    iab = [i.strip() for i in draft.meta.get("iab", "").split(",") if i.strip()]
    if iab:
        data["iab"] = iab
    root = draft.root
    if draft.bare and len(root.parts) == 1 and root.kind == "all":
        data["where"] = _data(root.parts[0], "where", f"{ROOT}-0", where)
    else:
        data["where"] = _data(root, "where", ROOT, where)
    return data, where | {f"segment.{k}": k for k in META}


def _data(part: Part, at: str, name: str, where: dict[str, str]) -> Any:
    where[at] = name
    if part.kind in ("all", "any"):
        key = part.kind
        return {key: [_data(p, f"{at}.{key}[{i}]", f"{name}-{i}", where) for i, p in _each(part)]}
    if part.kind == "not":
        if len(part.parts) == 1:
            return {"not": _data(part.parts[0], f"{at}.not", f"{name}-0", where)}
        parts = [_data(p, f"{at}.not.any[{i}]", f"{name}-{i}", where) for i, p in _each(part)]
        return {"not": {"any": parts} if parts else None}
    return part_data(part)


def _each(part: Part) -> list[tuple[int, Part]]:
    return list(enumerate(part.parts))


def data_draft(data: Mapping[str, Any], stored: str = "") -> Draft:
    """Return the form of a definition's data (what the form cannot show stays as a
    read-only block); FormError if it is no mapping of the keys a definition has."""
    unknown = sorted(set(data) - {*META, "where"})
    if unknown:
        raise FormError(f"segment.{unknown[0]}: unknown key (id, name, description, iab, where)")
    meta = {k: _meta_text(data.get(k, ""), k) for k in META}
    where, budget = data.get("where"), [MAX_PARTS]
    if isinstance(where, Mapping) and len(where) == 1 and isinstance(where.get("all"), list):
        return Draft(meta, _tree(where, 0, budget), False, stored)
    if isinstance(where, Mapping) and len(where) == 1 and isinstance(where.get("any"), list):
        return Draft(meta, _tree(where, 0, budget), False, stored)
    return Draft(meta, Part("all", {}, (_tree(where, 1, budget),)), True, stored)


def _meta_text(value: Any, key: str) -> str:
    if key == "iab" and isinstance(value, list):
        value = ", ".join(str(i) for i in value)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise FormError(f"segment.{key}: expected text")
    return str(value)


def _tree(data: Any, depth: int, budget: list[int]) -> Part:
    """Return the part of ``data`` (groups deeper than MAX_DEPTH: a read-only block)."""
    budget[0] -= 1
    if budget[0] < 0:
        raise FormError(f"at most {MAX_PARTS} conditions and groups")
    if isinstance(data, Mapping) and len(data) == 1 and depth <= MAX_DEPTH:
        ((key, value),) = data.items()
        if key in ("all", "any") and isinstance(value, list) and value:
            return Part(key, {}, tuple(_tree(v, depth + 1, budget) for v in value))
        if key == "not" and value is None:
            return Part("not")
        if key == "not" and isinstance(value, Mapping) and _many(value.get("any")):
            if len(value) == 1:
                return Part("not", {}, tuple(_tree(v, depth + 1, budget) for v in value["any"]))
        if key == "not":
            return Part("not", {}, (_tree(value, depth + 1, budget),))
    return data_part(data)


def _many(value: Any) -> bool:
    return isinstance(value, list) and len(value) >= 2


def apply_action(draft: Draft, action: str, form: Mapping[str, str] | None = None) -> Draft:
    """Return the draft after a button of the form: ``add-<kind>:<path>`` adds a fresh
    condition (or group) to a group (``add:<path>``: of the kind ``<path>-add`` names),
    ``remove:<path>`` removes a part."""
    verb, _, name = action.partition(":")
    if verb == "add":
        verb = f"add-{(form or {}).get(f'{name}-add', 'tier')}"
    path = _path(name)
    if path is None:
        return draft
    if verb.startswith("add-") and (verb[4:] in CONDITIONS or verb[4:] in GROUPS):
        if _count(draft.root) >= MAX_PARTS:
            raise FormError(f"at most {MAX_PARTS} conditions and groups")
        if verb[4:] in GROUPS and len(path) >= MAX_DEPTH:
            raise FormError(f"groups nest at most {MAX_DEPTH} levels deep")
        root = _change(draft.root, path, lambda p: replace(p, parts=(*p.parts, new_part(verb[4:]))))
        return replace(draft, root=root)
    if verb == "remove" and path:
        parent = path[:-1]
        root = _change(draft.root, parent, lambda p: replace(p, parts=_without(p.parts, path[-1])))
        return replace(draft, root=root)
    return draft


def _path(name: str) -> tuple[int, ...] | None:
    if name != ROOT and not re.match(r"^w(-[0-9]{1,3})+$", name):
        return None
    return tuple(int(i) for i in name.split("-")[1:])


def _without(parts: tuple[Part, ...], index: int) -> tuple[Part, ...]:
    return parts[:index] + parts[index + 1 :]


def _change(part: Part, path: tuple[int, ...], change: Any) -> Part:
    if not path:
        return change(part) if part.group else part
    if path[0] >= len(part.parts):
        return part
    inner = _change(part.parts[path[0]], path[1:], change)
    return replace(part, parts=part.parts[: path[0]] + (inner,) + part.parts[path[0] + 1 :])


def _count(part: Part) -> int:
    return 1 + sum(_count(p) for p in part.parts)
