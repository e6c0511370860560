"""What the persons API takes and answers: ids, parameters, bodies, a person
(:mod:`dmp.web.spec`)."""

from __future__ import annotations

from dmp.records import Stage, Tier
from dmp.web.params import JsonBody, Param, WholeNumber
from dmp.web.schema import Free, Obj, Text

_HEX16 = "[0-9a-f]{16}"
_STAGE_MESSAGE = f"{{path}} must be one of {', '.join(s.value for s in Stage)}"
_BY_MESSAGE = "{path} must be a string of at most 200 printable characters"
_REASON_MESSAGE = "{path} must be a string of at most 500 printable characters"


PID = Param(
    "pid",
    Text(pattern=_HEX16),
    "path",
    message="a person id is 16 lowercase hex digits",
    description="A person id (a merged id leads to the person it was merged into).",
)
REQUEST = Param(
    "request_id",
    Text(pattern=_HEX16),
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
# described, not closed).
PERSON = Obj(
    {
        "person_id": Text(pattern=_HEX16),
        "tier": Text(enum=tuple(t.value for t in Tier)),
        "identifiers": Obj(),
        "traits": Obj(),
        "consents": Obj(),
        "touchpoints": Free({"type": "array"}),
        "touchpoints_total": Free({"type": "integer"}),
        "stages": Free({"type": "array"}),
        "matrix": Free({"type": ["object", "null"]}, "The person's row of the latest build."),
    },
    required=("person_id", "tier", "identifiers", "traits", "touchpoints", "stages"),
)
REQUEST_STATE = Obj(
    {"request": Text(), "status": Text(), "person_id": Text()}, required=("status",)
)
