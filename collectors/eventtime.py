"""Event times as collectors take them: ms since the epoch, from 1970 to before 2100.

The range is the event log's (:data:`dmp.records.LATEST_MS`, which the worker's
``Hit.storable`` also checks): a time outside it is refused at the edge, where the
sender hears why, rather than dropped by the worker after the sender was told "ok".
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from dmp.records import LATEST_MS

MAX_TEXT = 64  # the longest ISO time with nanoseconds and an offset is 35 characters
_EPOCH_NUMBER = re.compile(r"[0-9]{9,13}(\.[0-9]{1,9})?")  # ASCII digits only


class EventTimeError(ValueError):
    """A time that is no event time; the message says why, without naming the field."""


def in_range(ms: int) -> bool:
    """Return whether ``ms`` is a time the event log can hold (1970 to before 2100)."""
    return type(ms) is int and 0 <= ms < LATEST_MS


def parse_event_time(text: str) -> int:
    """Return ms since the epoch of an ISO-8601 time (naive is UTC) or epoch s/ms digits."""
    text = text.strip()
    if not text.isascii() or len(text) > MAX_TEXT:
        raise EventTimeError("is not an ISO time or epoch seconds")
    if _EPOCH_NUMBER.fullmatch(text):
        number = float(text)
        ms = int(number if number > 1e11 else number * 1000)  # ms if it has 12+ digits
    else:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T", 1))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            ms = int(moment.timestamp() * 1000)
        except (ValueError, OverflowError):
            raise EventTimeError("is not an ISO time or epoch seconds") from None
    if not in_range(ms):
        raise EventTimeError("is out of range")
    return ms
