"""Typed records and the one Arrow schema of the event log."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

import pyarrow as pa


class Tier(str, Enum):
    """How much we know about a person; it only climbs (but for erasure or withdrawal)."""

    UNKNOWN = "unknown"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        """Return the tier's position in the order unknown < low < medium < high."""
        return _TIER_ORDER.index(self)


_TIER_ORDER = [Tier.UNKNOWN, Tier.LOW, Tier.MEDIUM, Tier.HIGH]


class Category(str, Enum):
    """A consent category dmp acts on."""

    ANALYTICS = "analytics"  # store and read the cookie, keep an identified history
    ADS = "ads"  # use the person for retargeting audiences
    EMAIL = "email"  # push the person to newsletter tools


class Source(str, Enum):
    """Which collector a hit came through."""

    PIXEL = "pixel"
    TAG = "tag"
    API = "api"


@dataclass(frozen=True, slots=True)
class Hit:
    """One validated, IP-truncated hit as a collector puts it on the ingest stream."""

    event_id: str
    site_id: str
    source: str
    type: str  # page | track | identify | screen | group | alias
    event: str  # the event name; "page" for page views
    received_at: int  # ms since the epoch, the collector's clock
    timestamp: int  # ms since the epoch, clock-skew corrected
    consent: dict[str, bool] = field(default_factory=dict)  # only categories the hit spoke of
    uid: str = ""  # the dmp_uid cookie, present only with analytics consent
    anonymous_id: str = ""
    user_id: str = ""
    previous_id: str = ""
    group_id: str = ""
    channel: str = "web"
    url: str = ""
    referrer: str = ""
    title: str = ""
    topics: list[str] = field(default_factory=list)
    properties: dict[str, Any] = field(default_factory=dict)
    traits: dict[str, Any] = field(default_factory=dict)
    external_ids: dict[str, str] = field(default_factory=dict)
    ip: str = ""
    user_agent: str = ""

    def to_json(self) -> str:
        """Return the hit as the compact JSON the stream carries (defaults left out)."""
        out: dict[str, Any] = {}
        for f in _HIT_FIELDS:
            value = getattr(self, f)
            if value or f in _HIT_REQUIRED:
                out[f] = value
        return json.dumps(out, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> Hit:
        """Return the hit encoded by :meth:`to_json`."""
        return cls(**json.loads(text))


_HIT_FIELDS = [f.name for f in fields(Hit)]
_HIT_REQUIRED = {"event_id", "site_id", "source", "type", "event", "received_at", "timestamp"}

_TS = pa.timestamp("ms", tz="UTC")

EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("site_id", pa.string(), nullable=False),
        pa.field("person_id", pa.string()),  # null for bots: they never become persons
        pa.field("source", pa.string(), nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("event", pa.string(), nullable=False),
        pa.field("channel", pa.string()),
        pa.field("timestamp", _TS, nullable=False),
        pa.field("received_at", _TS, nullable=False),
        pa.field("uid", pa.string()),
        pa.field("anonymous_id", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("url", pa.string()),
        pa.field("referrer", pa.string()),
        pa.field("title", pa.string()),
        pa.field("topics", pa.list_(pa.string())),
        pa.field("properties", pa.string()),  # JSON object
        pa.field("traits", pa.string()),  # JSON object
        pa.field("consent", pa.list_(pa.string())),  # categories granted with this event
        pa.field("ip", pa.string()),  # truncated before it reached the stream
        pa.field("user_agent", pa.string()),
        pa.field("browser", pa.string()),
        pa.field("os", pa.string()),
        pa.field("device", pa.string()),  # desktop | mobile | tablet | bot | other
        pa.field("is_bot", pa.bool_(), nullable=False),
    ],
    metadata={"dmp.schema": "events/1"},
)
"""The event log's schema: one row per stored event, partitioned by ``dt`` (UTC day)."""
