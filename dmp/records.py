"""Typed records and the one Arrow schema of the event log."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from enum import Enum
from types import MappingProxyType
from typing import Any, NamedTuple

import pyarrow as pa

# One compact JSON form for everything dmp writes (stream entries, timelines, proofs).
# A shared encoder: json.dumps with any non-default option builds a new one per call.
dump_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


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


class Stage(str, Enum):
    """A lifecycle stage: lead -> mql -> sal -> sql -> won | lost; a stale MQL is recycled."""

    LEAD = "lead"
    MQL = "mql"  # marketing qualified: the scoring model's rule
    SAL = "sal"  # sales accepted: set by sales (CRM or API), as are the rest
    SQL = "sql"
    WON = "won"
    LOST = "lost"
    RECYCLED = "recycled"  # an MQL gone cold: back to nurturing

    @property
    def set_by_sales(self) -> bool:
        """Return whether sales sets this stage (the model sets mql and recycled)."""
        return self in (Stage.SAL, Stage.SQL, Stage.WON, Stage.LOST)


FUNNEL = (Stage.LEAD, Stage.MQL, Stage.SAL, Stage.SQL, Stage.WON)  # the path, in order


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
    CRM = "crm"  # `dmp import crm`
    NEWSLETTER = "newsletter"  # `dmp import newsletter` and the newsletter webhook

    @property
    def server_side(self) -> bool:
        """Return whether hits come from the company's systems rather than a browser."""
        return self in (Source.API, Source.CRM, Source.NEWSLETTER)


_NO_MAP: Mapping[str, Any] = MappingProxyType({})


class Hit(NamedTuple):
    """One validated, IP-truncated hit as a collector puts it on the ingest stream.

    A NamedTuple rather than a frozen dataclass: the ingest worker builds hundreds of
    thousands per second, and a tuple is built five times faster. Immutable all the same;
    the empty-mapping defaults are read-only.

    The stream carries a hit positionally (see :meth:`to_json`), so fields are only ever
    added at the end, with a default: entries written before an upgrade still read.
    """

    event_id: str
    site_id: str
    source: str
    type: str  # page | track | identify | screen | group | alias | consent
    event: str  # the event name; "page" for page views
    received_at: int  # ms since the epoch, the collector's clock
    timestamp: int  # ms since the epoch, clock-skew corrected
    consent: Mapping[str, bool] = _NO_MAP  # only the categories the hit spoke of
    uid: str = ""  # the dmp_uid cookie, present only with analytics consent
    anonymous_id: str = ""
    user_id: str = ""
    previous_id: str = ""
    group_id: str = ""
    channel: str = "web"
    url: str = ""
    referrer: str = ""
    title: str = ""
    topics: Sequence[str] = ()
    properties: Mapping[str, Any] = _NO_MAP
    traits: Mapping[str, Any] = _NO_MAP
    external_ids: Mapping[str, str] = _NO_MAP
    ip: str = ""
    user_agent: str = ""
    # Sent by the company's own systems (a server key, an import): trusted. A browser's
    # hit (the public write key, which any visitor can read) is a claim: it may link the
    # browser to an identifier, but never grant consent for, or change, what trusted
    # sources said (see dmp.people.claims).
    trusted: bool = False
    # What the person agreed to: the site's consent text version, or ``tcf:`` and a hash
    # of the IAB TC string; kept in the consent's proof.
    consent_version: str = ""

    def to_json(self) -> str:
        """Return the hit as the compact JSON the stream carries.

        A JSON array of the fields in order, empty ones at the end left out: decoding it
        and building the hit costs the worker a third of what an object would (and the
        entry is a fifth smaller). :meth:`from_json` also reads the object form that
        entries had before.
        """
        values = list(self[:_N_REQUIRED])
        values += [
            v if v else empty for v, empty in zip(self[_N_REQUIRED:], _JSON_EMPTY, strict=True)
        ]
        end = len(values)
        while end > _N_REQUIRED and not values[end - 1]:
            end -= 1
        return dump_json(values[:end])

    @classmethod
    def from_json(cls, text: str | bytes) -> Hit:
        """Return the hit encoded by :meth:`to_json` (or as an object, field by name)."""
        data = json.loads(text)
        return cls(*data) if type(data) is list else cls(**data)

    def storable(self) -> bool:
        """Return whether the event log can hold this hit (ids present, times in range).

        Collectors validate hits; this guards the worker against a stream entry that
        would fail every flush (one bad time would otherwise block all behind it).
        """
        return (
            isinstance(self.event_id, str)
            and isinstance(self.site_id, str)
            and bool(self.event_id and self.site_id)
            and all(
                type(t) is int and 0 <= t < LATEST_MS for t in (self.timestamp, self.received_at)
            )
        )

    @classmethod
    def many_from_json(cls, texts: Sequence[bytes | None]) -> list[Hit | None]:
        """Return the hits of many encoded hits; None for each one that cannot be read.

        One JSON array is decoded at once (a third cheaper than one call per hit); a batch
        holding a bad entry falls back to decoding one by one.
        """
        try:
            if all(texts):
                decoded = json.loads(b"[" + b",".join(texts) + b"]")  # type: ignore[arg-type]
                return [cls(*d) if type(d) is list else cls(**d) for d in decoded]
        except (TypeError, ValueError):
            pass
        out: list[Hit | None] = []
        for text in texts:
            try:
                out.append(cls.from_json(text))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                out.append(None)
        return out


# A person id as dmp.people.identity mints it: 16 lower-case hex digits (8 random bytes).
PERSON_ID_PATTERN = "[0-9a-f]{16}"

_N_REQUIRED = 7  # event_id … timestamp have no default
# What each optional field is written as when empty: mappings as {}, the rest as defaults.
_JSON_EMPTY = tuple({} if isinstance(d, Mapping) else d for d in Hit._field_defaults.values())
LATEST_MS = 4_102_444_800_000  # 2100-01-01: any later event time is a broken clock

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
        pa.field("previous_id", pa.string()),  # alias calls
        pa.field("group_id", pa.string()),  # group calls
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
