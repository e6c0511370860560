"""A dry run the page can wait for: what a sync would add and remove, bounded in time.

``dmp export run --dry-run`` reads every member of every segment; a page cannot wait for
a million. Here each segment's first :data:`MEMBERS` members (by person id: ids are
random, so they are a fair sample) are read, turned into the rows the destination should
hold and compared with the rows it holds for the same person ids, exactly as the sync
engine does (``exporters.plans.diff``); a larger segment's counts are then scaled up to
an estimate. A segment is begun only if another count as long as the last one still
fits in :data:`SECONDS` (the first always is; the others are left uncounted, to be
dry-run alone), and a count still running :data:`SECONDS` after it began stops there
(its counts are then lower bounds). Nothing is sent, written or locked.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import polars as pl
import redis
from flask_babel import LazyString
from flask_babel import lazy_gettext as _l

from dmp.config import Config
from dmp.membership import audience
from dmp.membership.results import latest_run
from exporters import holdings, plans, reports
from exporters.destination import Destination, ExportError, Op, Settings
from exporters.holdings import Entry
from exporters.registry import kind_of
from exporters.sync import SegmentSync

MEMBERS = 1_000  # members of a segment looked at (one pipelined Redis read)
SECONDS = 0.25  # a dry run's time: a segment is begun only if it fits in (the first always)
LOOK_EVERY = 500  # rows between looks at the clock while counting
# Why a segment was not counted (else the destination's own words, e.g. a secret unset).
WHY: dict[str, LazyString] = {
    "no-run": _l("The segments have not run yet."),
    "not-in-run": _l("The segment was not in the last segment run."),
    "time": _l("Not counted: the time for a dry run was up. Try this segment alone."),
    "columns": _l("This destination's rows changed format: remove it and add it again."),
}


@dataclass(slots=True)
class Window:
    """The members a count looked at: how many, the last person id, and whether the
    segment has more (then counts are a sample)."""

    looked: int = 0
    last: str = ""
    cut: bool = False


@dataclass(frozen=True, slots=True)
class Trial:
    """One segment's dry run."""

    segment: str
    members: int = 0  # in the segment's last run
    looked: int = 0  # members looked at
    added: int = 0
    removed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> members
    sample: dict[str, list[list[str]]] = field(default_factory=dict)  # op -> rows
    sampled: bool = False  # the segment has more members than were looked at
    stopped: bool = False  # the count stopped at the deadline: counts are lower bounds
    error: str = ""  # why it was not counted: a key of WHY, or the destination's words

    def estimate(self, count: int) -> int:
        """Return a count scaled from the members looked at to the whole segment."""
        if not self.sampled or not self.looked:
            return count
        return round(count * self.members / self.looked)

    @property
    def why(self) -> str:
        """Return why the segment was not counted, in the page's language ('' if it was)."""
        return str(WHY[self.error]) if self.error in WHY else self.error


def dry_run(r: redis.Redis, config: Config, found: Settings, segments: list[str]) -> list[Trial]:
    """Return what a sync of ``segments`` would do, one bounded count per segment."""
    try:
        dest: Destination = kind_of(found.kind)(found)
    except ExportError as exc:  # a secret's variable unset: nothing can be counted
        return [Trial(s, error=str(exc)) for s in segments]
    run = latest_run(config)
    started = time.perf_counter()
    took = 0.0  # the last count's time: a segment is begun only if one more fits
    out = []
    for i, segment in enumerate(segments):
        now = time.perf_counter()
        if run is None or segment not in run["members"]:
            out.append(Trial(segment, error="no-run" if run is None else "not-in-run"))
        elif i and now - started + took > SECONDS:
            out.append(Trial(segment, run["members"][segment], error="time"))
        else:
            sync = SegmentSync(r, config, dest, found, segment)
            out.append(count(sync, run, now + SECONDS))
            took = time.perf_counter() - now
    return out


def count(sync: SegmentSync, run: dict[str, Any], deadline: float) -> Trial:
    """Return the dry run of one segment's sync, on its first members."""
    held = sync.held_path()
    dest = sync.dest
    if held is not None and holdings.count(held):
        if holdings.columns_of(held) != tuple(dest.columns):
            return Trial(sync.segment, error="columns")
    window, skipped = Window(), Counter[str]()
    should = _should(sync, run, skipped, window)
    ops = plans.diff(holdings.read_entries(held), should, dest.key, full=False, replaces=False)
    tally, sample, stopped = _tally(ops, window, deadline)
    members = int(run["members"][sync.segment])
    return Trial(
        sync.segment,
        members,
        window.looked,
        tally[Op.ADD.value],
        tally[Op.REMOVE.value],
        dict(skipped),
        sample,
        sampled=window.cut,
        stopped=stopped,
    )


def _tally(
    ops: Iterator[tuple[Op, Entry]], window: Window, deadline: float
) -> tuple[Counter[str], dict[str, list[list[str]]], bool]:
    """Return the adds and removes of the members looked at, a sample of each, and
    whether the count stopped at the deadline."""
    tally: Counter[str] = Counter()
    sample: dict[str, list[list[str]]] = {}
    for n, (op, entry) in enumerate(ops, start=1):
        if window.cut and entry.person_id > window.last:
            break  # past the members looked at: their held rows are not compared
        if n % LOOK_EVERY == 0 and time.perf_counter() > deadline:
            return tally, sample, True
        key = Op.REMOVE.value if op is Op.REMOVE else Op.ADD.value
        tally[key] += 1
        rows = sample.setdefault(key, [])
        if len(rows) < reports.MAX_SAMPLES:
            rows.append(list(entry.row))
    return tally, sample, False


def _should(
    sync: SegmentSync, run: dict[str, Any], skipped: Counter[str], window: Window
) -> Iterator[Entry]:
    """Yield the rows the destination should hold for the segment's first members."""
    pids = first_members(audience.members_file(sync.config, run), sync.segment, window)
    if not pids:
        return
    for _, contacts in audience.stream_contacts(sync.r, [pids], sync.dest.channel, skipped):
        for contact, row in zip(contacts, sync.dest.encode(contacts), strict=True):
            if row is None:
                skipped[audience.Skip.NO_IDENTIFIER.value] += 1
            else:
                yield Entry(contact.person_id, holdings.fingerprint(row), row)


def first_members(path: Any, segment: str, window: Window) -> list[str]:
    """Return the segment's first :data:`MEMBERS` person ids of a members file, sorted,
    and note in ``window`` how many and whether there are more."""
    found = (
        pl.scan_parquet(path)
        .filter(pl.col("segment_id") == segment)
        .select("person_id")
        .head(MEMBERS + 1)
        .collect()
        .to_series()
        .to_list()
    )
    pids = found[:MEMBERS]
    window.looked, window.cut = len(pids), len(found) > MEMBERS
    window.last = pids[-1] if pids else ""
    return pids
