"""Request input: typed parameters and JSON bodies, raw query strings.

Each route declares what it reads with the objects here (:mod:`dmp.web.spec`): ``read()``
returns the checked value or raises a 400 problem, and ``schema()`` describes it in the
OpenAPI document, so what is validated and what is documented are the same code.

``str.isdigit`` takes ``'²'``, ``'5³'`` and ``'١٢'`` (which ``int()`` then refuses or reads
as another number), and Werkzeug's ``get_json(silent=True)`` lets the ``RecursionError``
of a 2,000-deep array through: both were 500s. Routes read their input here instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from flask import request

from dmp.web.problems import Problem
from dmp.web.schema import Invalid, Shape, Text

MAX_QUERY_FIELDS = 64  # query parameters a pixel hit or a lookup may carry
_DIGITS = re.compile(r"[0-9]{1,9}")  # ASCII digits only, and no number Python must think about


def _bad_parameter(detail: str, status: int = 400) -> Problem:
    if status == 404:  # a path that names nothing there is
        return Problem(404, "Not found", detail, "not-found")
    return Problem(status, "Invalid parameter", detail)


@dataclass(frozen=True, slots=True)
class WholeNumber:
    """A whole-number query parameter within [low, high], ``default`` when absent."""

    name: str
    default: int
    low: int
    high: int
    description: str = ""

    def parse(self, raw: str | None) -> int:
        """Return the number ``raw`` spells (400 unless ASCII digits within the range)."""
        if raw is None:
            return self.default
        if not _DIGITS.fullmatch(raw) or not self.low <= int(raw) <= self.high:
            detail = f"{self.name} must be a whole number from {self.low} to {self.high}"
            raise _bad_parameter(detail)
        return int(raw)

    def read(self) -> int:
        """Return the request's value of the parameter."""
        return self.parse(request.args.get(self.name))

    def schema(self) -> dict[str, Any]:
        """Return the OpenAPI Parameter Object."""
        shape = {"type": "integer", "minimum": self.low, "maximum": self.high}
        return _parameter(self.name, "query", False, {**shape, "default": self.default}, self)


@dataclass(frozen=True, slots=True)
class Param:
    """A text parameter of the query, the path or a header, checked by its shape;
    ``message`` is the 400's detail when it does not fit (else the shape's reason), with
    ``{value}`` standing for the value sent."""

    name: str
    shape: Text
    where: str = "query"  # "query", "path" or "header"
    required: bool = False
    message: str = ""
    description: str = ""
    status: int = 400  # the answer to a value that does not fit (404 for a path)

    def parse(self, raw: str | None) -> str | None:
        """Return the checked value of ``raw`` (None when absent and not required)."""
        if raw is None:
            if self.required:
                raise _bad_parameter(self.message or f"{self.name} is required")
            return None
        try:
            return self.shape.check(raw, self.name)
        except Invalid as exc:
            detail = self.message.replace("{value}", raw) if self.message else str(exc)
            raise _bad_parameter(detail, self.status) from None

    def read(self) -> str | None:
        """Return the request's value of the parameter."""
        if self.where == "path":
            raw = (request.view_args or {}).get(self.name)
        elif self.where == "header":
            raw = request.headers.get(self.name)
        else:
            raw = request.args.get(self.name)
        return self.parse(raw)

    def schema(self) -> dict[str, Any]:
        """Return the OpenAPI Parameter Object."""
        required = self.required or self.where == "path"
        return _parameter(self.name, self.where, required, self.shape.schema(), self)


def _parameter(
    name: str, where: str, required: bool, schema: dict[str, Any], of: WholeNumber | Param
) -> dict[str, Any]:
    out = {"name": name, "in": where, "required": required, "schema": schema}
    if of.description:
        out["description"] = of.description
    return out


def json_body() -> Any:
    """Return the request's JSON body; None if it is not JSON or nests too deeply to read."""
    try:
        return request.get_json(silent=True)
    except RecursionError:
        return None


LONE_SURROGATE = "the body holds a lone UTF-16 surrogate (\\ud800-\\udfff)"


def has_lone_surrogate(value: Any) -> bool:
    """Return whether a JSON value holds a string with a lone UTF-16 surrogate: the JSON
    escape ``\\ud800`` alone is valid JSON but no text, which Redis, Parquet and UTF-8
    cannot take."""
    # A loop, not recursion: the JSON decoder reads deeper arrays than Python may recurse.
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            todo += item.keys()
            todo += item.values()
        elif isinstance(item, list):
            todo += item
    return False


@dataclass(frozen=True, slots=True)
class JsonBody:
    """A JSON request body of at most ``max_bytes``, checked by ``shape``.

    ``strict`` answers 415 unless the request says ``application/json``; an optional body
    (``required`` False) that is absent reads as ``{}``. A body that is no JSON, or whose
    shape does not fit, is a 400 titled ``title`` (``hint`` is its detail for no JSON).
    """

    shape: Shape
    max_bytes: int
    title: str = "Invalid body"
    hint: str = "the body is not valid JSON"
    strict: bool = False
    required: bool = True
    path: str = ""  # what Invalid names as the body's top ('': its members bare)
    large: str = ""  # the 413's detail
    example: Any = None  # for the document (and the fuzz test's first request)

    def read(self) -> Any:
        """Return the checked body (413, 415 or 400 problem+json otherwise)."""
        if (request.content_length or 0) > self.max_bytes:
            detail = self.large or f"the body may be at most {self.max_bytes} bytes"
            raise Problem(413, "Payload too large", detail)
        if not self.required and not request.content_length:
            return {}
        if self.strict and not request.is_json:
            raise Problem(415, "Unsupported media type", "send the body as application/json")
        data = json_body()
        if data is None:
            raise Problem(400, self.title, self.hint)
        if has_lone_surrogate(data):  # was a 500: stored, it failed to encode
            raise Problem(400, self.title, LONE_SURROGATE)
        try:
            return self.shape.check(data, self.path)
        except Invalid as exc:
            raise Problem(400, self.title, str(exc)) from None

    def schema(self, description: str = "") -> dict[str, Any]:
        """Return the OpenAPI Request Body Object."""
        media: dict[str, Any] = {"schema": self.shape.schema()}
        if self.example is not None:
            media["example"] = self.example
        out: dict[str, Any] = {"required": self.required, "content": {"application/json": media}}
        if description:
            out["description"] = description
        return out


class BadQuery(ValueError):
    """A query string that cannot be read; the message says why."""


def query_args(query: str) -> dict[str, str]:
    """Return the first value of each parameter of a raw WSGI query string (UTF-8, bad bytes
    replaced), for the fast paths before Flask. Raise BadQuery past MAX_QUERY_FIELDS.

    What ``urllib.parse.parse_qsl(query, errors="replace")`` reads, first value of a name
    kept (a test holds them equal): pairs split at ``&`` and the first ``=``, a pair
    without ``=`` or with an empty value left out, ``+`` a space, percent-escapes decoded.
    Only a part holding ``+`` or ``%`` is decoded: a pixel hit's own CPU time fell from
    68-73 µs to 64-67 µs (in-process, alternating)."""
    if not query.isascii():
        # WSGI hands the raw query over as latin-1; a client may send UTF-8 unescaped.
        query = query.encode("latin-1", "replace").decode("utf-8", "replace")
    if query.count("&") >= MAX_QUERY_FIELDS:
        raise BadQuery(f"more than {MAX_QUERY_FIELDS} query parameters")
    args: dict[str, str] = {}
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if not value:  # no "=", or nothing after it
            continue
        if "+" in name or "%" in name:
            name = unquote(name.replace("+", " "), errors="replace")
        if name in args:
            continue
        if "+" in value or "%" in value:
            value = unquote(value.replace("+", " "), errors="replace")
        args[name] = value
    return args
