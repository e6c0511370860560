"""What a route takes and answers, declared once next to it (:func:`describe`).

The declaration's parameters are read and checked before the view runs (a view gets
them as keyword arguments), its body object is what the view reads the body with, and
:mod:`dmp.web.openapi` walks the app's URL map and turns every declaration into the
OpenAPI document. The fast paths (pixel, lookup) state an :class:`Operation` beside their
code without the wrapper: nothing is added to their requests.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from dmp.web.params import Param, WholeNumber
from dmp.web.schema import Shape

ATTRIBUTE = "operation"  # where a view function carries its Operation
PROBLEM_TYPE = "application/problem+json"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

# Who may call: the key kinds of dmp.web.auth, the collectors' write keys and the
# metrics token, as OpenAPI security schemes.
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "adminKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "An admin API key (`dmp keys create --scope admin`).",
    },
    "partnerKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A partner key: an ad tool, limited to the segments shared with it.",
    },
    "importKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "An import key (`dmp keys create --scope import`).",
    },
    "importKeyQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "key",
        "description": "An import key in the URL, for tools that cannot set headers.",
    },
    "writeKey": {
        "type": "http",
        "scheme": "basic",
        "description": "A site's public write key as the user, no password: a browser's "
        "claim (or `writeKey` in the body).",
    },
    "serverKey": {
        "type": "http",
        "scheme": "basic",
        "description": "A site's server key as the user, no password: trusted data.",
    },
    "pixelKey": {
        "type": "apiKey",
        "in": "query",
        "name": "k",
        "description": "A site's public write key.",
    },
    "metricsToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "DMP_METRICS_TOKEN, when it is set.",
    },
}
ANONYMOUS = ""  # in a security list: the route also answers without any key


class Body(Protocol):
    """A request body declaration: it reads the body, and describes it."""

    def schema(self, description: str = "") -> dict[str, Any]:
        """Return the OpenAPI Request Body Object."""
        ...


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer of an operation: its media type and body schema (none for no body)."""

    description: str
    media: str | None = "application/json"
    schema: Shape | Mapping[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # name -> description

    def openapi(self) -> dict[str, Any]:
        """Return the OpenAPI Response Object."""
        out: dict[str, Any] = {"description": self.description}
        if self.media is not None:
            schema = self.schema if self.schema is not None else {}
            if not isinstance(schema, Mapping):
                schema = schema.schema()
            out["content"] = {self.media: {"schema": dict(schema)}}
        if self.headers:
            out["headers"] = {
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in self.headers.items()
            }
        return out


def problem(description: str, headers: Mapping[str, str] | None = None) -> Reply:
    """Return an answer that is an RFC 9457 problem (``application/problem+json``)."""
    return Reply(description, PROBLEM_TYPE, PROBLEM_REF, headers or {})


# The answers many routes share.
BAD_PARAMETER = problem("A parameter or the body is not what the operation takes.")
NO_KEY = problem("No key, or no key of a scope this operation takes.")
NOT_FOUND = problem("Nothing with that id.")
TOO_LARGE = problem("The body is larger than the operation takes.")
UNAVAILABLE = problem(
    "The data store is away; retry later.", {"Retry-After": "Seconds to wait before a retry."}
)
RATE_LIMITED = problem(
    "This client or write key sent more than its limit.",
    {"Retry-After": "Seconds until the client or key may send again."},
)


@dataclass(frozen=True, slots=True)
class Operation:
    """An operation's declaration: parameters, body, answers, who may call, its group."""

    summary: str
    tag: str
    replies: Mapping[int, Reply]
    params: tuple[Param | WholeNumber, ...] = ()
    body: Body | None = None
    security: tuple[str, ...] = ()  # scheme names, any one of which opens it; () public
    description: str = ""

    def openapi(self, operation_id: str) -> dict[str, Any]:
        """Return the OpenAPI Operation Object."""
        out: dict[str, Any] = {"operationId": operation_id, "summary": self.summary}
        if self.description:
            out["description"] = self.description
        out["tags"] = [self.tag]
        if self.params:
            out["parameters"] = [p.schema() for p in self.params]
        if self.body is not None:
            out["requestBody"] = self.body.schema()
        out["responses"] = {str(code): reply.openapi() for code, reply in self.replies.items()}
        out["security"] = [{name: []} if name else {} for name in self.security]
        return out


def _docstring(view: Callable[..., Any]) -> tuple[str, str]:
    """Return a view's docstring as a summary (its first sentence) and the rest."""
    # Docstrings are reStructuredText; OpenAPI descriptions are CommonMark.
    text = " ".join((view.__doc__ or "").split()).replace("``", "`")
    summary, _, rest = text.partition(". ")
    return summary.rstrip("."), rest


def describe(
    *,
    tag: str,
    replies: Mapping[int, Reply],
    params: tuple[Param | WholeNumber, ...] = (),
    body: Body | None = None,
    security: tuple[str, ...] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Return a decorator that declares a view's operation (its docstring is the summary
    and description) and reads ``params`` into its keyword arguments, checked (400)."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        summary, rest = _docstring(view)
        operation = Operation(summary, tag, replies, params, body, security, rest)

        @functools.wraps(view)
        def checked(**args: Any) -> Any:
            for param in params:
                args[param.name] = param.read()
            return view(**args)

        setattr(checked, ATTRIBUTE, operation)
        return checked

    return decorate


def operation_of(view: Callable[..., Any]) -> Operation | None:
    """Return the Operation a view function declares (None for none)."""
    return getattr(view, ATTRIBUTE, None)


def static(operation: Operation) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Return a decorator that attaches ``operation`` to a view as it is (no wrapper)."""

    def attach(view: Callable[..., Any]) -> Callable[..., Any]:
        setattr(view, ATTRIBUTE, operation)
        return view

    return attach
