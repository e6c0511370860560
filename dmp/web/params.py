"""Request input of the JSON APIs: one helper per kind of query parameter, and JSON bodies.

``str.isdigit`` takes ``'²'``, ``'5³'`` and ``'١٢'`` (which ``int()`` then refuses or reads
as another number), and Werkzeug's ``get_json(silent=True)`` lets the ``RecursionError``
of a 2,000-deep array through: both were 500s. Routes read their input here instead.
"""

from __future__ import annotations

import re
from typing import Any

from flask import request

from dmp.web.problems import Problem

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
