"""The newsletter tools' webhook formats, read into newsletter rows.

Each reader takes one call's checked body and returns the events dmp acts on, as the
rows ``collectors.newsletter.newsletter_hit`` reads (email, event, time, campaign, url,
double_opt_in) plus what the tool said (tool, tool_event, reason: kept in the proof),
and how many events it ignores and why. A reader never raises for an event of a kind it
does not know: the tool must hear 200, or it disables the hook. What it cannot read of
an event it acts on (no address, no time) the row carries as is, and ``newsletter_hit``
names it (400).

- **Mailchimp** posts ``application/x-www-form-urlencoded``: ``type``, ``fired_at`` (UTC,
  ``2009-03-26 21:35:57``) and ``data[…]`` fields (``data[email]``, ``data[reason]``,
  ``data[action]``, ``data[list_id]``, ``data[campaign_id]``, ``data[old_email]``,
  ``data[new_email]``). It signs nothing.
- **Brevo** posts one JSON event: ``event``, ``email``, ``ts_event`` (UTC seconds),
  ``camp_id``, ``campaign name``, ``URL``, ``reason``… Event names are camelCase in its
  settings and snake_case in some payloads (``hardBounce``, ``hard_bounce``): both read.
- **CleverReach** posts JSON ``{"event": "receiver.unsubscribed", "condition": …,
  "payload": {"group_id": …, "pool_id": …, "email": …}}``; it sends no event time, so
  the time dmp receives it is the event's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from collectors.payload import Payload
from dmp.records import LATEST_MS
from dmp.web.schema import Free, Number, Obj, Text


@dataclass(frozen=True, slots=True)
class ToolEvent:
    """One event of a tool's call as a newsletter row, with what the tool said of it."""

    row: dict[str, str]  # the fields of a newsletter file row
    said: dict[str, str]  # tool, tool_event, reason: kept in the consent's proof
    key: dict[str, str] = field(default_factory=dict)  # more fields that tell calls apart


@dataclass(frozen=True, slots=True)
class Reading:
    """What one webhook call holds: the events dmp acts on, and those it ignores (why)."""

    events: tuple[ToolEvent, ...] = ()
    why: tuple[str, ...] = ()  # one reason per ignored event

    @property
    def ignored(self) -> int:
        """Return how many events of the call dmp does not act on."""
        return len(self.why)


def _doi(value: bool | None) -> str:
    """Return a double opt-in flag as a row's cell ('' when not known)."""
    return "" if value is None else "yes" if value else "no"


# --- Mailchimp ---------------------------------------------------------------------------

_FORM = Text(max_length=1000, printable=True)
MAILCHIMP = Payload(
    Obj(
        {
            "type": Text(
                max_length=32,
                printable=True,
                description="subscribe, unsubscribe, cleaned, upemail, profile or campaign.",
                message="{path}: expected Mailchimp's event type (text, at most 32 characters)",
            ),
            "fired_at": Text(
                max_length=64, printable=True, description="UTC, as 2026-09-21 14:13:20."
            ),
            "data[email]": _FORM,
            "data[reason]": _FORM,
            "data[action]": _FORM,
            "data[list_id]": _FORM,
            "data[campaign_id]": _FORM,
            "data[old_email]": _FORM,
            "data[new_email]": _FORM,
        },
        required=("type",),
        description="A Mailchimp audience webhook call (other data[…] fields are not read).",
    ),
    media=("application/x-www-form-urlencoded",),
    description="Mailchimp's form-encoded event.",
    example={
        "type": "unsubscribe",
        "fired_at": "2026-09-21 14:13:20",
        "data[action]": "unsub",
        "data[reason]": "manual",
        "data[email]": "anna@example.com",
        "data[list_id]": "a6b5da1054",
        "data[campaign_id]": "cb398d21d2",
    },
)
# What Mailchimp's cleaned reasons mean, for the proof.
_CLEANED = {"hard": "hard bounce", "abuse": "spam complaint"}


def read_mailchimp(form: Mapping[str, str], double_opt_in: bool | None) -> Reading:
    """Return the events of a Mailchimp call (its ``type`` decides what they do)."""
    kind = form["type"].strip().lower()
    key = {"list": form.get("data[list_id]", "")}
    campaign = form.get("data[campaign_id]", "")

    def event(email_field: str, what: str, reason: str = "", doi: str = "") -> ToolEvent:
        row = {"email": form.get(email_field, ""), "event": what, "time": form.get("fired_at", "")}
        row |= {"campaign": campaign, "double_opt_in": doi}
        said = {"tool": "mailchimp", "tool_event": kind, "reason": reason}
        return ToolEvent(row, said, key)

    reason = form.get("data[reason]", "")
    if kind == "subscribe":
        return Reading((event("data[email]", "subscribe", doi=_doi(double_opt_in)),))
    if kind == "unsubscribe" and form.get("data[action]", "unsub") != "delete":
        return Reading((event("data[email]", "unsubscribe", reason),))
    if kind == "cleaned":
        return Reading((event("data[email]", "cleaned", _CLEANED.get(reason, reason)),))
    if kind == "upemail":  # the subscriber changed the address: the old one leaves the list
        old = event("data[old_email]", "unsubscribe", "address changed")
        return Reading((old, event("data[new_email]", "subscribe", "address changed")))
    what = "a deleted member" if kind == "unsubscribe" else f"type {kind[:32]!r}"
    return Reading(why=(what,))


# --- Brevo ---------------------------------------------------------------------------------

_SECONDS = Number(low=0, high=math.floor(LATEST_MS / 1000), whole=True, nullable=True)
BREVO = Payload(
    Obj(
        {
            "event": Text(
                max_length=64,
                description="unsubscribed, hardBounce, spam, delivered, opened, click, …",
                message="{path}: expected Brevo's event name (text, at most 64 characters)",
            ),
            "email": Text(max_length=254, nullable=True),
            "ts_event": _SECONDS,
            "ts": _SECONDS,
            "ts_epoch": Number(low=0, high=LATEST_MS, whole=True, nullable=True),
            "camp_id": Free({"type": ["integer", "string", "null"]}),
            "campaign name": Text(max_length=1000, nullable=True),
            "URL": Text(max_length=2000, nullable=True),
            "link": Text(max_length=2000, nullable=True),
            "reason": Text(max_length=1000, nullable=True),
            "id": Free({"type": ["integer", "string", "null"]}),
        },
        required=("event",),
        description="A Brevo webhook event (other members are not read).",
    ),
    description="One Brevo event, as its marketing webhook sends it.",
    example={
        "id": 123456,
        "camp_id": 42,
        "email": "anna@example.com",
        "campaign name": "September",
        "date_sent": "2026-09-21 10:00:00",
        "date_event": "2026-09-21 16:13:20",
        "event": "unsubscribe",
        "tag": "",
        "ts_sent": 1790000000,
        "ts_event": 1790000000,
        "list_id": [3],
    },
)
# Brevo's event names (lowercase, without _) -> dmp's event and the reason for the proof.
_BREVO = {
    "unsubscribed": ("unsubscribe", ""),
    "unsubscribe": ("unsubscribe", ""),
    "hardbounce": ("cleaned", "hard bounce"),
    "spam": ("cleaned", "spam complaint"),
    "opened": ("open", ""),
    "uniqueopened": ("open", ""),
    "click": ("click", ""),
}


def read_brevo(body: Mapping[str, Any]) -> Reading:
    """Return the event of a Brevo call (its ``event`` decides what it does)."""
    name = body["event"].strip()
    found = _BREVO.get(name.lower().replace("_", ""))
    if name.lower() == "delivered" and body.get("camp_id") not in (None, ""):
        found = ("sent", "")  # a campaign (a transactional mail goes to anybody)
    if found is None:
        return Reading(why=(f"event {name[:64]!r}",))
    what, reason = found
    if what == "cleaned" and isinstance(body.get("reason"), str) and body["reason"]:
        reason = f"{reason}: {body['reason']}"
    seconds = body.get("ts_event") or body.get("ts")
    at = str(seconds * 1000) if seconds else str(body.get("ts_epoch") or "")
    row = {"email": body.get("email") or "", "event": what, "time": at}
    row |= {
        "campaign": body.get("campaign name") or "",
        "url": body.get("URL") or body.get("link") or "",
    }
    said = {"tool": "brevo", "tool_event": name, "reason": reason}
    return Reading((ToolEvent(row, said, {"id": str(body.get("id") or "")}),))


# --- CleverReach ---------------------------------------------------------------------------

CLEVERREACH = Payload(
    Obj(
        {
            "event": Text(
                max_length=64,
                description="receiver.unsubscribed, receiver.subscribed, …",
                message="{path}: expected CleverReach's event name (text, at most 64 characters)",
            ),
            "condition": Free({"type": ["integer", "string", "null"]}),
            "payload": Obj(
                {
                    "email": Text(max_length=254, nullable=True),
                    "group_id": Free({"type": ["integer", "string", "null"]}),
                    "pool_id": Free({"type": ["integer", "string", "null"]}),
                },
                nullable=True,
            ),
        },
        required=("event",),
        description="A CleverReach hook call (other members are not read).",
    ),
    description="One CleverReach receiver event.",
    example={
        "event": "receiver.unsubscribed",
        "condition": "1939",
        "payload": {"group_id": 1939, "pool_id": 4711, "email": "anna@example.com"},
    },
)
_CLEVERREACH = {"receiver.unsubscribed": "unsubscribe", "receiver.subscribed": "subscribe"}


def read_cleverreach(body: Mapping[str, Any], double_opt_in: bool | None, now: int) -> Reading:
    """Return the event of a CleverReach call, timed ``now`` (it sends no time)."""
    name = body["event"].strip()
    what = _CLEVERREACH.get(name.lower())
    payload = body.get("payload") or {}
    if what is None:
        return Reading(why=(f"event {name[:64]!r}",))
    if not payload.get("email"):
        # The receiver named only by its ids: dmp would have to ask CleverReach's API.
        return Reading(why=(f"{name[:64]} naming no address",))
    doi = _doi(double_opt_in) if what == "subscribe" else ""
    row = {"email": payload["email"], "event": what, "time": str(now), "double_opt_in": doi}
    said = {"tool": "cleverreach", "tool_event": name, "reason": ""}
    key = {"group": str(payload.get("group_id") or body.get("condition") or "")}
    return Reading((ToolEvent(row, said, key),))
