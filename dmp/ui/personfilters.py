"""The persons list's query parameters: ``?tier= &stage= &interest= &segment= &channel=
&page=``, the names the overview and segment pages link with, checked once here."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl
from flask_babel import gettext as _

from dmp.config import Config
from dmp.matrix.roster import CHANNELS, RosterFilter
from dmp.membership.results import segments_dir
from dmp.records import Stage, Tier

FILTERS = ("tier", "stage", "interest", "segment", "channel", "touched")
MAX_PAGE = 100_000
MAX_TOPIC = 100
SEGMENT_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
TOUCH_CHANNEL = re.compile(r"[a-z0-9_-]{1,40}")  # a touchpoint's channel: web, email, crm …
CHOICES = {
    "tier": tuple(t.value for t in Tier),
    "stage": tuple(s.value for s in Stage),
    "channel": CHANNELS,
}


class BadFilter(ValueError):
    """A query parameter the list cannot use (the message says which, for the page)."""


@dataclass(frozen=True, slots=True)
class ListQuery:
    """The filters of a persons list and its page (None: any)."""

    tier: str | None = None
    stage: str | None = None
    interest: str | None = None
    segment: str | None = None
    channel: str | None = None
    touched: str | None = None
    page: int = 1

    @property
    def where(self) -> RosterFilter:
        """Return the roster filter of every filter but the segment."""
        return RosterFilter(self.tier, self.stage, self.interest, self.channel, self.touched)

    @property
    def filtered(self) -> bool:
        """Return whether any filter is set."""
        return any(getattr(self, name) is not None for name in FILTERS)

    def params(self, **changes: Any) -> dict[str, Any]:
        """Return the query parameters of this list (with ``changes``), for links."""
        values = {name: getattr(self, name) for name in (*FILTERS, "page")} | changes
        return {k: v for k, v in values.items() if v is not None and (k, v) != ("page", 1)}


def read_list_query(args: Mapping[str, str]) -> ListQuery:
    """Return the list query of request arguments (BadFilter says what is wrong)."""
    found: dict[str, Any] = {}
    for name, choices in CHOICES.items():
        value = args.get(name)
        if value is not None and value not in choices:
            raise BadFilter(
                _("%(name)s must be one of: %(choices)s.", name=name, choices=", ".join(choices))
            )
        found[name] = value
    interest = args.get("interest")
    if interest is not None and not 0 < len(interest) <= MAX_TOPIC:
        raise BadFilter(_("interest must be a topic of 1 to %(n)s characters.", n=MAX_TOPIC))
    segment = args.get("segment")
    if segment is not None and not SEGMENT_ID.fullmatch(segment):
        raise BadFilter(_("segment must be a segment id (lowercase letters, digits and -)."))
    touched = args.get("touched")
    if touched is not None and not TOUCH_CHANNEL.fullmatch(touched):
        raise BadFilter(_("touched must be a channel name (lowercase letters, digits, _ and -)."))
    page = args.get("page", "1")
    if not (page.isascii() and page.isdigit() and len(page) <= 6 and 0 < int(page) <= MAX_PAGE):
        raise BadFilter(_("page must be a whole number from 1 to %(n)s.", n=MAX_PAGE))
    return ListQuery(interest=interest, segment=segment, touched=touched, page=int(page), **found)


def segment_members(config: Config, run: dict[str, Any], sid: str) -> Callable[[], pl.Series]:
    """Return a loader of a segment's member ids in a run (its members file, filtered)."""

    def load() -> pl.Series:
        members = pl.scan_parquet(segments_dir(config) / run["members_file"])
        return (
            members.filter(pl.col("segment_id") == sid).select("person_id").collect()["person_id"]
        )

    return load
