"""Unsubscribes a newsletter tool reports while dmp syncs to it flow back into dmp.

When Mailchimp answers an upsert with "this address unsubscribed (or was cleaned)
here", that is the person's word, given to the company's own tool: dmp withdraws the
address's ``email`` consent, so the person leaves every newsletter destination and is
not added again until they opt in again. The withdrawal goes through the ingest stream
as a trusted newsletter hit (the worker applies it in order, with its proof naming the
destination), like an unsubscribe from the tool's webhook.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable

import redis

from dmp.ingest import stream
from dmp.records import Category, Hit, Source

SITE = "import:newsletter"  # the site id newsletter hits carry (collectors.newsletter)


def withdraw(
    r: redis.Redis, kind: str, destination: str, emails: Iterable[str], session: str
) -> int:
    """Queue an ``email`` consent withdrawal for each address a destination reported
    unsubscribed; return how many."""
    now = int(time.time() * 1000)
    hits = [_hit(kind, destination, e, session, now) for e in dict.fromkeys(emails) if e]
    if hits:
        stream.enqueue(r, hits, {}, atomic=True)
    return len(hits)


def _hit(kind: str, destination: str, email: str, session: str, now: int) -> Hit:
    digest = hashlib.sha256(f"{destination}\x1f{email}\x1f{session}".encode()).hexdigest()[:32]
    return Hit(
        event_id=f"unsub-{digest}",
        site_id=SITE,
        source=Source.NEWSLETTER.value,
        type="track",
        event="unsubscribe",
        received_at=now,
        timestamp=now,
        consent={Category.EMAIL.value: False},
        channel="email",
        properties={"tool": kind, "destination": destination},
        traits={"email": email},
        trusted=True,
    )
