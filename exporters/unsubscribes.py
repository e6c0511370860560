"""Unsubscribes a newsletter tool reports while dmp syncs to it flow back into dmp.

When Mailchimp answers an upsert with "this address unsubscribed (or was cleaned)
here", that is the person's word, given to the company's own tool: dmp withdraws the
address's ``email`` consent, so the person leaves every newsletter destination and is
not added again until they opt in again. The withdrawal takes the path of the tools'
own webhooks (``collectors.newsletter``): a trusted newsletter ``unsubscribe`` whose proof
names the tool, queued with a row digest (once per address and sync) and skipped for an
address erased before.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import redis

from collectors.imports import ImportReport, enqueue_new, row_digest, storable
from collectors.newsletter import newsletter_hit
from dmp.records import Source


def withdraw(
    r: redis.Redis,
    kind: str,
    destination: str,
    emails: Iterable[str],
    session: str,
    partitions: int = 1,
) -> int:
    """Queue an ``email`` consent withdrawal for each address a destination reported
    unsubscribed; return how many were queued."""
    now = int(time.time() * 1000)
    said = {"tool": kind, "tool_event": "unsubscribed", "reason": f"reported to {destination}"}
    hits = []
    for email in dict.fromkeys(e for e in emails if e):
        row = {"email": email, "event": "unsubscribe", "time": str(now / 1000)}
        digest = row_digest(Source.NEWSLETTER.value, {**row, "session": session, **said})
        hits.append((digest, storable(newsletter_hit(row, digest, now, said))))
    report = ImportReport(rows=len(hits))
    enqueue_new(r, Source.NEWSLETTER.value, hits, report, partitions=partitions)
    return report.new
