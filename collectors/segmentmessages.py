"""A Segment-spec message made a hit: its checks, times, channel and batch context.

What :mod:`collectors.trackingapi` (the HTTP API) takes, one message at a time: the
message's shape (also in the OpenAPI document), its event time corrected for the
sender's clock, its external ids, and what the key and the request tell of its channel.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from collectors import browser
from collectors.consent import consent_version, map_segment_consent
from collectors.enrichment import truncate_ip
from collectors.eventtime import in_range
from collectors.payload import invalid
from dmp.access.sites import Caller
from dmp.records import Hit, Source
from dmp.web.problems import Problem
from dmp.web.schema import Free, Invalid, Obj, Text

TYPES = ("identify", "track", "page", "screen", "group", "alias")
CHANNELS = ("browser", "mobile", "server")  # Segment's values of a message's channel
MAX_ID = 256

# A Segment message as to_hit checks it (and the OpenAPI document describes it).
_ID = Text(max_length=MAX_ID, numbers=True, nullable=True)
TIME = Free({"type": "string", "maxLength": 64}, "ISO 8601, 1970 to 2099; naive is UTC.")
_OBJECT = Obj(nullable=True)
CONTEXT = Obj(
    {
        "traits": _OBJECT,
        "page": _OBJECT,
        "externalIds": Free({"type": "array", "items": {"type": "object"}}),
        "ip": Free({"type": "string"}),
        "userAgent": Free({"type": "string"}),
        "consent": Free({"type": "object"}, "categoryPreferences: the consent categories granted."),
    },
    nullable=True,
)
MESSAGE = Obj(
    {
        "type": Free({"enum": list(TYPES)}, "Needed in a batch; the path says it otherwise."),
        "userId": _ID,
        "anonymousId": _ID,
        "messageId": Text(
            max_length=MAX_ID, numbers=True, nullable=True, description="The dedup key."
        ),
        "previousId": _ID,
        "groupId": _ID,
        "event": Free({"type": "string", "maxLength": 200}, "The event's name (track needs it)."),
        "context": CONTEXT,
        "properties": _OBJECT,
        "traits": _OBJECT,
        "timestamp": TIME,
        "originalTimestamp": TIME,
        "sentAt": TIME,
        "channel": Free({"type": "string"}),
        "name": Free({"type": "string"}),
    },
    description="A Segment message: userId or anonymousId is needed.",
)


def parse_time(value: Any, path: str) -> int | None:
    """Return ms since the epoch of an ISO-8601 string (naive means UTC); None when absent."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64:
        raise invalid(f"{path}: expected an ISO-8601 time string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        ms = int(parsed.timestamp() * 1000)
    except (ValueError, OverflowError):
        raise invalid(f"{path}: not an ISO-8601 time: {value!r}") from None
    if not in_range(ms):
        raise invalid(f"{path}: expected a time from 1970 to 2099: {value!r}")
    return ms


def corrected_time(msg: dict[str, Any], batch_sent_at: int | None, received: int, path: str) -> int:
    """Return the event time corrected for clock skew (receivedAt − (sentAt − timestamp)).

    A correction landing outside 1970-2099 (clocks set to nonsense) gives receivedAt.
    """
    client = parse_time(msg.get("originalTimestamp"), f"{path}.originalTimestamp")
    if client is None:
        client = parse_time(msg.get("timestamp"), f"{path}.timestamp")
    sent = parse_time(msg.get("sentAt"), f"{path}.sentAt")
    if sent is None:
        sent = batch_sent_at
    if client is None:
        return received
    if sent is None:
        return client
    corrected = received - (sent - client)
    return corrected if in_range(corrected) else received


def _external_ids(context: dict[str, Any], path: str) -> dict[str, str]:
    raw = context.get("externalIds")
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise invalid(f"{path}.externalIds: expected a list")
    out = {}
    for i, item in enumerate(raw[:20]):
        if not isinstance(item, dict):
            raise invalid(f"{path}.externalIds[{i}]: expected an object")
        kind, value = (
            _checked(_ID, item.get("type"), f"{path}.externalIds[{i}].type"),
            _checked(_ID, item.get("id"), f"{path}.externalIds[{i}].id"),
        )
        if kind and value:
            out[kind] = value
    return out


def _checked(shape: Text | Obj, value: Any, path: str) -> Any:
    try:
        return shape.check(value, path)
    except Invalid as exc:
        raise invalid(str(exc)) from None


def _size(msg: dict[str, Any], path: str) -> int:
    """Return the UTF-8 size of a message; raise a 400 for what no JSON reader takes back."""
    try:
        text = json.dumps(msg, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return len(text.encode())
    except UnicodeEncodeError:
        raise invalid(f"{path}: a string holds an unpaired surrogate (not UTF-8)") from None
    except ValueError:
        raise invalid(f"{path}: NaN and Infinity are not JSON numbers") from None


def to_hit(
    msg: Any,
    kind: str | None,
    caller: Caller,
    received: int,
    sent_at: int | None,
    path: str,
    limit: int,
    origin: str = "",
) -> Hit:
    """Return the Hit of one Segment message (``origin``: the page's that sent it, if a
    page did), or raise a 400 Problem naming the path."""
    site = caller.site
    if not isinstance(msg, dict):
        raise invalid(f"{path}: expected an object")
    if _size(msg, path) > limit:
        raise Problem(
            400, "Payload too large", f"{path}: an event may be at most {limit} bytes", "too-large"
        )
    kind = kind or msg.get("type")
    if kind not in TYPES:
        raise invalid(f"{path}.type: expected one of {', '.join(TYPES)}")
    msg = _checked(MESSAGE, msg, path)
    user_id, anonymous_id = msg.get("userId") or "", msg.get("anonymousId") or ""
    if not user_id and not anonymous_id:
        raise invalid(f"{path}: userId or anonymousId is required")
    context, traits = msg.get("context") or {}, msg.get("traits") or {}
    properties = msg.get("properties") or {}
    if kind == "group":
        # A group call's traits describe the group (the company), not the person: an
        # info@ address there must not become every member's email.
        properties = {**properties, "group_traits": traits} if traits else properties
        traits = {}
    traits = {**(context.get("traits") or {}), **traits}
    page = context.get("page") or {}
    if kind == "track":
        event = msg.get("event")
        if not isinstance(event, str) or not event.strip() or len(event) > 200:
            raise invalid(f"{path}.event: track needs an event name (1-200 characters)")
    else:
        event = kind  # a page's or screen's name travels as its title
    message_id = msg.get("messageId") or uuid.uuid4().hex
    ip = context.get("ip")
    ua = context.get("userAgent")
    return Hit(
        event_id=message_id,
        site_id=site.site_id,
        source=Source.API.value,
        type=kind,
        event=event,
        received_at=received,
        timestamp=corrected_time(msg, sent_at, received, path),
        consent=map_segment_consent(context),
        anonymous_id=anonymous_id,
        user_id=user_id,
        previous_id=(msg.get("previousId") or "") if kind == "alias" else "",
        group_id=(msg.get("groupId") or "") if kind == "group" else "",
        channel=channel_of(caller, origin, msg.get("channel")),
        url=browser.clean_url(properties.get("url") or page.get("url"), site.keep_params),
        referrer=browser.clean_url(
            properties.get("referrer") or page.get("referrer"), site.keep_params
        ),
        title=browser.clean_title(properties.get("title") or page.get("title") or msg.get("name")),
        topics=browser.clean_topics(properties.get("topics")),
        properties=properties,
        traits=traits,
        external_ids=_external_ids(context, f"{path}.context"),
        ip=truncate_ip(ip) if isinstance(ip, str) else "",
        user_agent=ua[:512] if isinstance(ua, str) else "",
        trusted=caller.trusted,
        consent_version=consent_version(context),
    )


def channel_of(caller: Caller, origin: str, claimed: Any) -> str:
    """Return a message's channel: told by the key and the request where they can tell it
    (see the module's docstring), else the message's own if it is one of Segment's."""
    if caller.trusted:
        return "server"
    if origin:
        return "browser"
    return claimed if claimed in CHANNELS else "server"


def with_batch_context(batch: list[Any], context: dict[str, Any]) -> list[Any]:
    """Return the messages with the batch's context under each one's own (theirs win)."""
    if not context:
        return batch
    out = []
    for m in batch:
        own = m.get("context") if isinstance(m, dict) else None
        if isinstance(m, dict) and (own is None or isinstance(own, dict)):
            m = {**m, "context": {**context, **(own or {})}}
        out.append(m)  # anything else is refused by to_hit, naming its path
    return out
