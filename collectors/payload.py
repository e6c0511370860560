"""JSON request bodies of the collectors' APIs: size limits, gzip, and typed fields."""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass
from typing import Any

from flask import Request

from dmp.web.params import LONE_SURROGATE, has_lone_surrogate
from dmp.web.problems import Problem
from dmp.web.schema import Invalid, Shape


def invalid(detail: str, title: str = "Invalid payload") -> Problem:
    """Return the 400 problem for a body that is not what the API takes."""
    return Problem(400, title, detail, slug="invalid-payload")


def _too_large(what: str, limit: int) -> Problem:
    return Problem(400, "Payload too large", f"{what} may be at most {limit} bytes", "too-large")


def read_body(req: Request, limit: int) -> dict[str, Any]:
    """Return the JSON object of the request body, gunzipped, at most ``limit`` bytes."""
    if req.content_length is not None and req.content_length > limit:
        raise _too_large("the body", limit)
    raw = req.stream.read(limit + 1)
    if len(raw) > limit:
        raise _too_large("the body", limit)
    if req.headers.get("Content-Encoding", "").lower() == "gzip":
        try:
            inflater = zlib.decompressobj(wbits=31)
            raw = inflater.decompress(raw, limit + 1)
        except zlib.error as exc:
            raise invalid(f"the gzip body is corrupt: {exc}") from None
        if len(raw) > limit or inflater.unconsumed_tail:
            raise _too_large("the unzipped body", limit)
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid(f"the body is not valid JSON: {exc}", "Malformed JSON") from None
    except RecursionError:
        raise invalid("the body's JSON is nested too deeply", "Malformed JSON") from None
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object")
    if _SURROGATE_ESCAPE.search(raw) and has_lone_surrogate(body):
        # "\ud800" is valid JSON but no text: it could not be stored or written to Parquet.
        raise invalid(LONE_SURROGATE)
    return body


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # json.loads would take NaN and Infinity


def expect_object(value: Any, path: str) -> dict[str, Any]:
    """Return ``value`` if it is a JSON object ({} when absent); else raise a 400 naming it."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"{path}: expected an object")
    return value


@dataclass(frozen=True, slots=True)
class Payload:
    """A collector's JSON body: :func:`read_body` reads it (limits set per request, from
    the settings), ``check`` holds it to ``shape`` (a 400 naming the path), and ``schema``
    describes it in the OpenAPI document."""

    shape: Shape
    media: tuple[str, ...] = ("application/json",)
    description: str = ""
    example: Any = None  # for the document (and the fuzz test's first request)

    def check(self, body: dict[str, Any], path: str = "") -> dict[str, Any]:
        """Return the body with its declared members checked (400 problem otherwise)."""
        try:
            return self.shape.check(body, path)
        except Invalid as exc:
            raise invalid(str(exc)) from None

    def schema(self, description: str = "") -> dict[str, Any]:
        """Return the OpenAPI Request Body Object."""
        described: dict[str, Any] = {"schema": self.shape.schema()}
        if self.example is not None:
            described["example"] = self.example
        return {
            "description": description or self.description,
            "required": True,
            "content": {media: described for media in self.media},
        }
