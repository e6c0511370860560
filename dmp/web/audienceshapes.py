"""What the audience pull API takes and answers (:mod:`dmp.web.spec`): its parameters,
its JSON bodies, and answers that come as JSON, CSV or Parquet."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dmp.web.audiencecursors import MAX_LENGTH, PATTERN
from dmp.web.audiencefeeds import KINDS
from dmp.web.audienceformats import MEDIA
from dmp.web.params import Param, WholeNumber
from dmp.web.schema import Free, ListOf, Obj, Shape, Text
from dmp.web.spec import BAD_PARAMETER, NO_KEY, UNAVAILABLE, Reply, problem

JSON_LIMIT = 100_000  # persons per JSON page (a body built in memory by the client)


@dataclass(frozen=True, slots=True)
class Formats:
    """An answer in JSON (described by its schema), CSV or Parquet."""

    description: str
    schema: Shape
    headers: Mapping[str, str]

    def openapi(self) -> dict[str, Any]:
        """Return the OpenAPI Response Object, one content entry per format."""
        out = Reply(self.description, schema=self.schema, headers=self.headers).openapi()
        out["content"][MEDIA["csv"]] = {"schema": {"type": "string"}}
        out["content"][MEDIA["parquet"]] = {"schema": {"type": "string", "format": "binary"}}
        return out


TEXT_OR_NULL = Free({"type": ["string", "null"]})
CURSORS = {
    "X-Next-Cursor": "The cursor of the next page (absent on the last page).",
    "Link": 'The next page\'s URL, as `<…>; rel="next"` (absent on the last page).',
    "X-Since-Cursor": "On the last page: the cursor to ask the changes feed with.",
}
ROW = Obj({"change": Text(enum=("entered", "left"))}, required=("change",))
_ENVELOPE = {"audience": Text(), "run": Text(), "id": Text(enum=KINDS)}
_TAIL = {"next": TEXT_OR_NULL, "since": TEXT_OR_NULL}
MEMBERS = Obj(
    {**_ENVELOPE, "members": ListOf(Text()), **_TAIL},
    required=("audience", "run", "id", "members", "next", "since"),
)
CHANGES = Obj(
    {**_ENVELOPE, "since_run": Text(), "changes": ListOf(ROW), **_TAIL},
    required=("audience", "run", "since_run", "id", "changes", "next", "since"),
)
AUDIENCES = Obj(
    {
        "audiences": ListOf(
            Obj(
                {
                    "id": Text(),
                    "run": Free({"type": ["object", "null"]}),
                    "members": Free({"type": ["integer", "null"]}),
                },
                required=("id", "run", "members"),
            )
        )
    },
    required=("audiences",),
)
FORMAT = Param("format", Text(enum=tuple(MEDIA)), description="json (the default), csv, parquet.")
KIND = Param(
    "id",
    Text(enum=KINDS),
    description="The identifier in each row: a dmp_uid cookie, or the SHA-256 (hex) of "
    "the email. Needed without a cursor; a cursor keeps its own.",
)
CURSOR_TEXT = Text(max_length=MAX_LENGTH, pattern=PATTERN)
CURSOR = Param("cursor", CURSOR_TEXT, description="The next cursor of the page before.")
SINCE = Param(
    "since",
    CURSOR_TEXT,
    required=True,
    description="The since cursor of a members or changes listing's last page, or the "
    "next cursor of a changes page.",
)
LIMIT = WholeNumber(
    "limit", 10_000, 1, 1_000_000, f"Persons per page (json: at most {JSON_LIMIT:,})."
)
FEED_ERRORS = {
    400: BAD_PARAMETER,
    401: NO_KEY,
    403: problem("The audience is not shared with the key."),
    409: problem("No segment run holds the audience yet."),
    410: problem("The run this cursor pages through is gone: start again without one."),
    503: UNAVAILABLE,
}
