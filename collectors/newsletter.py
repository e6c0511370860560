"""Newsletter engagement as hits: sent, open, click, unsubscribe and bounce events.

Rows come from a file (``dmp import newsletter``) or the webhook (``POST
/hooks/newsletter``), with the same fields: email, event, time, campaign, topic, url.
The newsletter tool mails only its subscribers, so sent, open and click carry the
``email`` consent it holds; unsubscribe withdraws it; a bounce marks the address
(``email_status: bounced``), which takes the person off the email channel.
"""

from __future__ import annotations

import time
from typing import Any

from collectors.imports import Fields, RowError, parse_time
from dmp.identity import normalise_email
from dmp.records import Hit, Source

SITE = "import:newsletter"
EVENTS = ("sent", "open", "click", "unsubscribe", "bounce")
_SPELLED = {
    "opened": "open",
    "clicked": "click",
    "delivered": "sent",
    "send": "sent",
    "unsubscribed": "unsubscribe",
    "bounced": "bounce",
    "hard_bounce": "bounce",
    "abmeldung": "unsubscribe",
}
FIELDS = Fields(
    {
        "email": ("e_mail", "email_address", "mail", "recipient"),
        "event": ("type", "action", "event_type", "activity"),
        "time": ("timestamp", "date", "datum", "occurred_at", "created_at"),
        "campaign": ("campaign_name", "kampagne", "mailing"),
        "topic": ("topics", "thema", "category"),
        "url": ("link", "click_url", "target"),
    },
    required=("email", "event", "time"),
)


def newsletter_hit(row: dict[str, Any], digest: str, now_ms: int | None = None) -> Hit:
    """Return the hit of one newsletter event (RowError says what is wrong with it)."""
    now = now_ms or int(time.time() * 1000)
    raw_email, raw_event = row.get("email"), row.get("event")
    email = normalise_email(raw_email)
    if not email:
        raise RowError(f"email: {raw_email!r} is not an email address")
    if not isinstance(raw_event, str) or not raw_event.strip():
        raise RowError(f"event: missing (one of {', '.join(EVENTS)})")
    event = raw_event.strip().lower().replace(" ", "_").replace("-", "_")
    event = _SPELLED.get(event, event)
    if event not in EVENTS:
        raise RowError(f"event: {raw_event!r} is not one of {', '.join(EVENTS)}")
    if not row.get("time"):
        raise RowError("time: missing")
    ts = parse_time(row["time"], now)
    traits: dict[str, Any] = {"email": email}
    consent: dict[str, bool] = {}
    if event == "unsubscribe":
        consent["email"] = False
    elif event == "bounce":
        traits["email_status"] = "bounced"
    else:
        consent["email"] = True
    url = row.get("url") or ""
    if url and not url.startswith(("http://", "https://")):
        raise RowError(f"url: {url[:80]!r} is not an http(s) URL")
    properties = {"campaign": row["campaign"][:200]} if row.get("campaign") else {}
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
        url=url[:2000],
        topics=topics[:20],
        properties=properties,
        traits=traits,
    )
