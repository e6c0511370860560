"""What the persons API takes and answers: ids, parameters, bodies, a person
(:mod:`dmp.web.spec`)."""

from __future__ import annotations

from dmp.records import PERSON_ID_PATTERN, Stage, Tier
from dmp.web.params import JsonBody, Param, WholeNumber
from dmp.web.schema import Free, ListOf, Obj, Text
from segments.matrix import MOMENTS

_STAGE_MESSAGE = f"{{path}} must be one of {', '.join(s.value for s in Stage)}"
_BY_MESSAGE = "{path} must be a string of at most 200 printable characters"
_REASON_MESSAGE = "{path} must be a string of at most 500 printable characters"


PID = Param(
    "pid",
    Text(pattern=PERSON_ID_PATTERN),
    "path",
    message="a person id is 16 lowercase hex digits",
    description="A person id (a merged id leads to the person it was merged into).",
)
REQUEST = Param(
    "request_id",
    Text(pattern=PERSON_ID_PATTERN),
    "path",
    message="a request id is 16 lowercase hex digits",
    description="The id an erasure answered 202 with.",
)
LIMIT = WholeNumber("limit", 100, 1, 1000, "Touchpoints to show, newest first.")
EMAIL = Param("email", Text(), description="An email address of the person.")
UID = Param(
    "uid",
    Text(min_length=1, max_length=64),
    message="uid= must be a dmp_uid cookie value",
    description="A dmp_uid cookie value.",
)
STAGE_CHANGE = JsonBody(
    Obj(
        {
            "stage": Text(enum=tuple(s.value for s in Stage), message=_STAGE_MESSAGE),
            "by": Text(max_length=200, printable=True, message=_BY_MESSAGE),
        },
        required=("stage",),
        message='send a JSON object such as {"stage": "sal"}',
    ),
    4096,
    hint='send a JSON object such as {"stage": "sal"}',
    large="a stage change is a small JSON object",
    example={"stage": "sal", "by": "jana@example.com"},
)
ERASURE = JsonBody(
    Obj(
        {
            name: Text(max_length=500, printable=True, message=_REASON_MESSAGE)
            for name in ("reason", "by")
        },
        message='send a JSON object such as {"reason": "ticket 42"}',
    ),
    4096,
    hint='send a JSON object such as {"reason": "ticket 42"}',
    required=False,
    large="an erasure request is a small JSON object",
    example={"reason": "ticket 42", "by": "dpo@example.com"},
)
# What the person routes answer (the data's own members are many and grow: they are
# described, not closed). Every moment a person reads is ISO 8601 in UTC.
TIME = Free(
    {"type": "string", "format": "date-time"}, "ISO 8601, UTC: 2026-09-21T14:13:20.000+00:00."
)
_MOMENT = Free({"type": ["string", "null"], "format": "date-time"}, TIME.description)
STAGE_RECORD = Obj(
    {
        "stage": Text(enum=tuple(s.value for s in Stage)),
        "at": TIME,
        "source": Text(description="What set it: the API, an import, the stage rules."),
        "by": Text(description="Who, where the source names someone."),
    },
    required=("stage", "at"),
)
STAGE_RECORDED = Obj({"person_id": Text(pattern=PERSON_ID_PATTERN), **STAGE_RECORD.fields})
PERSON = Obj(
    {
        "person_id": Text(pattern=PERSON_ID_PATTERN),
        "tier": Text(enum=tuple(t.value for t in Tier)),
        "identifiers": Obj(),
        "traits": Obj(),
        "consents": Obj(),
        "first_seen": _MOMENT,
        "last_seen": _MOMENT,
        "touchpoints": ListOf(Obj({"timestamp": TIME}), description="Newest first."),
        "touchpoints_total": Free({"type": "integer"}),
        "stages": ListOf(STAGE_RECORD, description="Every stage entered, oldest first."),
        "matrix": Free(
            {
                "type": ["object", "null"],
                "properties": {name: _MOMENT.schema() for name in MOMENTS},
            },
            "The person's row of the latest build (its moments in ISO 8601, UTC).",
        ),
    },
    required=("person_id", "tier", "identifiers", "traits", "touchpoints", "stages"),
)
REQUEST_STATE = Obj(
    {"request": Text(), "status": Text(), "person_id": Text()}, required=("status",)
)
