"""Newsletter events as hits: sent, open, click, subscribe, unsubscribe, cleaned, bounce.

Rows come from a file (``dmp import newsletter``) or the webhook (``POST
/hooks/newsletter``), with the same fields: email, event, time, campaign, topic, url,
double_opt_in; the tools' own webhook formats (``collectors.newsletterhooks``) become
the same rows. What each event does to the ``email`` consent of the address:

- ``subscribe`` grants it: an opt-in, with the double opt-in the tool reports;
- ``sent`` grants it too: the tool mails only its subscribers;
- ``unsubscribe`` withdraws it, and so does ``cleaned``: the tool took the address off
  its list (a hard bounce, a spam complaint), the reason kept in the proof;
- ``open`` and ``click`` are touchpoints only: reading an old mail after unsubscribing
  is no new opt-in;
- ``bounce`` marks the address (``email_status: bounced``), which takes the person off
  the email channel.

The worker applies consent in event-time order (``dmp.people.consents.applies``): an
event older than the state held (an export imported after the unsubscribe) changes
nothing.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Response, jsonify, request

from collectors.imports import (
    Fields,
    ImportReport,
    RowError,
    enqueue_new,
    excerpt,
    parse_time,
    row_digest,
    storable,
)
from collectors.payload import Payload, invalid, read_body
from collectors.redaction import redact_url
from dmp.access.apikeys import Scope
from dmp.people.identity import normalise_email
from dmp.records import Hit, Source
from dmp.web.auth import scoped_blueprint
from dmp.web.deps import current_deps
from dmp.web.problems import Problem
from dmp.web.schema import Either, Free, Invalid, ListOf, Obj, Text
from dmp.web.spec import NO_KEY, UNAVAILABLE, Reply, describe, problem

# Import keys (the newsletter tool) or admin keys as bearer tokens; import keys as ?key= too,
# for tools that cannot set headers.
bp = scoped_blueprint("newsletter", __name__, Scope.IMPORT, Scope.ADMIN, query_fallback=True)
MAX_EVENTS = 1000  # per webhook call

SITE = "import:newsletter"
EVENTS = ("sent", "open", "click", "subscribe", "unsubscribe", "cleaned", "bounce")
GRANTS = frozenset({"sent", "subscribe"})  # events that give the address email consent
WITHDRAWS = frozenset({"unsubscribe", "cleaned"})
_SPELLED = {
    "opened": "open",
    "clicked": "click",
    "delivered": "sent",
    "send": "sent",
    "subscribed": "subscribe",
    "opt_in": "subscribe",
    "optin": "subscribe",
    "signup": "subscribe",
    "anmeldung": "subscribe",
    "confirmed": "subscribe",
    "unsubscribed": "unsubscribe",
    "abmeldung": "unsubscribe",
    "complaint": "cleaned",
    "abuse": "cleaned",
    "bounced": "bounce",
    "hard_bounce": "bounce",
}
FIELDS = Fields(
    {
        "email": ("e_mail", "email_address", "mail", "recipient"),
        "event": ("type", "action", "event_type", "activity"),
        "time": ("timestamp", "date", "datum", "occurred_at", "created_at"),
        "campaign": ("campaign_name", "kampagne", "mailing"),
        "topic": ("topics", "thema", "category"),
        "url": ("link", "click_url", "target"),
        "double_opt_in": ("doi", "opt_in", "optin", "double_optin", "double_opt_in_confirmed"),
    },
    required=("email", "event", "time"),
)


def newsletter_hit(
    row: dict[str, Any],
    digest: str,
    now_ms: int | None = None,
    said: dict[str, str] | None = None,
) -> Hit:
    """Return the hit of one newsletter event (RowError says what is wrong with it);
    ``said`` is what a tool's own webhook adds to its properties (tool, tool_event,
    reason), which the consent's proof keeps."""
    now = now_ms or int(time.time() * 1000)
    raw_email = row.get("email")
    email = normalise_email(raw_email)
    if not email:
        raise RowError(f"email: {excerpt(raw_email)} is not an email address")
    event = event_of(row.get("event"))
    if not row.get("time"):
        raise RowError("time: missing")
    ts = parse_time(row["time"], now)
    traits: dict[str, Any] = {"email": email}
    consent = {"email": event in GRANTS} if event in GRANTS | WITHDRAWS else {}
    if event == "bounce":
        traits["email_status"] = "bounced"
    url = row.get("url") or ""
    if url and not url.startswith(("http://", "https://")):
        raise RowError(f"url: {excerpt(url)} is not an http(s) URL")
    topics = [t.strip()[:64] for t in (row.get("topic") or "").split(",") if t.strip()]
    return Hit(
        event_id=f"nl-{digest}",
        site_id=SITE,
        source=Source.NEWSLETTER.value,
        type="track",
        event=event,
        received_at=now,
        timestamp=ts,
        consent=consent,
        channel="email",
        url=redact_url(url[:2000]),  # tracking links carry subscriber ids
        topics=topics[:20],
        properties=_properties(row, said),
        traits=traits,
        trusted=True,  # the newsletter tool (an import key or a file the company imports)
    )


def event_of(raw: Any) -> str:
    """Return the event a row names, in dmp's spelling (RowError if it names none)."""
    if not isinstance(raw, str) or not raw.strip():
        raise RowError(f"event: missing (one of {', '.join(EVENTS)})")
    event = raw.strip().lower().replace(" ", "_").replace("-", "_")
    event = _SPELLED.get(event, event)
    if event not in EVENTS:
        raise RowError(f"event: {excerpt(raw)} is not one of {', '.join(EVENTS)}")
    return event


def _properties(row: dict[str, Any], said: dict[str, str] | None) -> dict[str, Any]:
    """Return a newsletter hit's properties: campaign, double opt-in and what a tool said."""
    properties: dict[str, Any] = {"campaign": row["campaign"][:200]} if row.get("campaign") else {}
    doi = _yes_no(row.get("double_opt_in"))
    if doi is not None:
        properties["double_opt_in"] = doi  # kept in the email consent's proof
    if said:
        properties.update({name: value[:200] for name, value in said.items() if value})
    return properties


_YES = frozenset({"1", "true", "yes", "ja", "y", "double", "confirmed", "bestätigt"})
_NO = frozenset({"0", "false", "no", "nein", "n", "single", "unconfirmed"})


def _yes_no(value: Any) -> bool | None:
    """Return a reported double opt-in as a bool (None when not reported or unreadable)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if value is not None else ""
    return True if text in _YES else False if text in _NO else None


# What the webhook takes: each field a string or a number, as a file's cell would hold it.
_FIELD = Text(numbers=True, nullable=True, message="event fields must be strings or numbers")
EVENT = Obj(
    {name: _FIELD for name in FIELDS.aliases},
    required=FIELDS.required,
    description=f"A newsletter event: event is one of {', '.join(EVENTS)}; time is ISO "
    "8601 or seconds since the epoch.",
)
WEBHOOK = Payload(
    Either(
        (
            Obj({"events": ListOf(EVENT, 1, MAX_EVENTS)}, required=("events",)),
            EVENT,
        )
    ),
    description=f"Up to {MAX_EVENTS} events, or one; all checked before any is stored.",
    example={
        "events": [
            {
                "email": "anna@example.com",
                "event": "click",
                "time": "2025-09-10T09:41:00Z",
                "campaign": "September",
                "topic": "crm",
                "url": "https://example.com/crm",
            }
        ]
    },
)


@bp.post("/hooks/newsletter")
@describe(
    tag="import",
    body=WEBHOOK,
    security=("importKey", "adminKey", "importKeyQuery"),
    replies={
        202: Reply(
            "Accepted: how many are new, how many had been received before, and how many "
            "name a person erased before (skipped).",
            schema=Obj(
                {
                    "accepted": Free({"type": "integer"}),
                    "duplicates": Free({"type": "integer"}),
                    "erased_before": Free({"type": "integer"}),
                },
                required=("accepted", "duplicates", "erased_before"),
            ),
        ),
        400: problem("An event is invalid (``errors`` names each); nothing was stored."),
        401: NO_KEY,
        413: problem("The body is larger than the largest batch."),
        503: UNAVAILABLE,
    },
)
def webhook() -> tuple[Response, int]:
    """Take newsletter events: ``{"events": [{email, event, time, …}]}`` or one event.

    The key (scope ``import`` or ``admin``) comes as ``Authorization: Bearer`` or, for
    tools that cannot set headers, an import key as ``?key=``. All events are checked first: one bad
    event refuses the call (400, naming each) and nothing is stored. Answers 202 with
    how many were accepted, how many had been received before, and how many name a
    person erased before (skipped: they asked to be forgotten).
    """
    deps = current_deps()
    body = read_body(request, deps.config.max_batch_bytes)
    events = body.get("events", [body]) if "events" in body else [body]
    if not isinstance(events, list) or not events:
        raise invalid("events: expected a non-empty list of event objects")
    if len(events) > MAX_EVENTS:
        raise invalid(f"events: at most {MAX_EVENTS} per call")
    hits, errors = [], []
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            errors.append({"index": i, "reason": "expected an object"})
            continue
        row = {name: _text(event.get(name)) for name in FIELDS.aliases}
        digest = row_digest(Source.NEWSLETTER.value, row)
        try:
            hits.append((digest, storable(newsletter_hit(row, digest))))
        except RowError as exc:
            errors.append({"index": i, "reason": str(exc)})
    if errors:
        first = f"events[{errors[0]['index']}]"
        reason = errors[0]["reason"]
        first += f".{reason}" if reason.split(":", 1)[0] in FIELDS.aliases else f": {reason}"
        detail = f"{len(errors)} of {len(events)} events are invalid ({first}); none was stored"
        extra = {"errors": errors[:100]}
        raise Problem(400, "Invalid events", detail, "invalid-payload", extra)
    report = ImportReport(rows=len(hits))
    enqueue_new(
        deps.redis,
        Source.NEWSLETTER.value,
        hits,
        report,
        partitions=deps.config.stream_partitions,
    )
    counts = {"accepted": report.new, "duplicates": report.already, "erased_before": report.erased}
    return jsonify(counts), 202


def _text(value: Any) -> str | None:
    """Return a webhook value as the text a file cell would hold."""
    try:
        text = _FIELD.check(value, "event")
    except Invalid as exc:
        raise invalid(str(exc)) from None
    return None if text is None else text.strip()
