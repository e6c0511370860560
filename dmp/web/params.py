"""Request input: one helper per kind of query parameter, raw query strings, JSON bodies.

``str.isdigit`` takes ``'²'``, ``'5³'`` and ``'١٢'`` (which ``int()`` then refuses or reads
as another number), and Werkzeug's ``get_json(silent=True)`` lets the ``RecursionError``
of a 2,000-deep array through: both were 500s. Routes read their input here instead.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from flask import request

from dmp.web.problems import Problem

MAX_QUERY_FIELDS = 64  # query parameters a pixel hit or a lookup may carry
_DIGITS = re.compile(r"[0-9]{1,9}")  # ASCII digits only, and no number Python must think about


def whole_number(name: str, default: int, low: int, high: int) -> int:
    """Return the whole-number query parameter ``name`` within [low, high] (400 otherwise)."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not _DIGITS.fullmatch(raw) or not low <= int(raw) <= high:
        raise Problem(
            400, "Invalid parameter", f"{name} must be a whole number from {low} to {high}"
        )
    return int(raw)


def json_body() -> Any:
    """Return the request's JSON body; None if it is not JSON or nests too deeply to read."""
    try:
        return request.get_json(silent=True)
    except RecursionError:
        return None


class BadQuery(ValueError):
    """A query string that cannot be read; the message says why."""


def query_args(query: str) -> dict[str, str]:
    """Return the first value of each parameter of a raw WSGI query string (UTF-8, bad bytes
    replaced), for the fast paths before Flask. Raise BadQuery past MAX_QUERY_FIELDS."""
    if not query.isascii():
        # WSGI hands the raw query over as latin-1; a client may send UTF-8 unescaped.
        query = query.encode("latin-1", "replace").decode("utf-8", "replace")
    try:
        pairs = parse_qsl(query, errors="replace", max_num_fields=MAX_QUERY_FIELDS)
    except ValueError:  # parse_qsl's answer to too many fields
        raise BadQuery(f"more than {MAX_QUERY_FIELDS} query parameters") from None
    args: dict[str, str] = {}
    for name, value in pairs:
        args.setdefault(name, value)
    return args
