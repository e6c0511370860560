"""A person's access export: everything dmp holds about them, as one JSON document.

Redis gives the identifiers, traits, consents with their proof, stages and current
segments; the event log gives the whole timeline (every event stored under the person's
id or under an id merged into it); the latest matrix gives the score with its reasons;
segment runs give the entered/left history; the destinations' current holdings say
which retargeting and newsletter tools hold a row of the person (their recipients).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import polars as pl
import redis

from dmp.config import Config
from dmp.ingest.eventlog import scan_events
from dmp.matrix import snapshots, sources
from dmp.membership.results import segments_dir
from dmp.people import consents as consent_rules
from dmp.people import lifecycle, profiles
from dmp.storage import exportfiles, keyspace
from segments.matrix import by_weight

FORMAT = "dmp.person-export/1"


def export_person(r: redis.Redis, config: Config, pid: str) -> dict[str, Any] | None:
    """Return everything held about person ``pid`` (or the person it was merged into);
    None if there is no such person."""
    person = profiles.get_person(r, pid, 1)
    if person is None:
        return None
    pid = person["person_id"]
    logged = {old for old, live in sources.merge_map(r).items() if live == pid}
    merged = sorted(logged | r.smembers(keyspace.person(pid, "merged")))
    ids = [pid, *merged]
    uids = person["identifiers"].get("uid", [])
    person.pop("touchpoints")  # the event log's timeline below is whole
    return {
        "format": FORMAT,
        "exported_at": _iso(datetime.now(UTC)),
        **person,
        "consent_history": consent_history(r, pid),
        "merged_from": merged,
        "stages": [
            {**stage, "at": _iso(datetime.fromtimestamp(stage["at"] / 1000, UTC))}
            for stage in lifecycle.parse_records(r.lrange(keyspace.person(pid, "stages"), 0, -1))
        ],
        "score": _matrix_row(config, pid),
        "segments": sorted(r.smembers(keyspace.person(pid, "segments"))),
        "segment_history": _segment_changes(config, ids),
        "destinations": _destinations(r, config, ids),
        "timeline": _events(config, ids, uids),
    }


def _destinations(r: redis.Redis, config: Config, ids: list[str]) -> list[dict[str, Any]]:
    """Return each destination and segment whose current holding has rows of the person
    (or of an id merged into them): the tool, its kind and how many rows it holds."""
    out = []
    for name, segment, path in exportfiles.holdings(r, config):
        rows = (
            pl.scan_parquet(path)
            .filter(pl.col("person_id").is_in(ids))
            .select(pl.len())
            .collect()
            .item()
        )
        if rows:
            kind = r.hget(keyspace.destination(name), "kind") or ""
            out.append({"destination": name, "kind": kind, "segment": segment, "rows": rows})
    return out


def consent_history(r: redis.Redis, pid: str) -> list[dict[str, Any]]:
    """Return every consent a person gave or withdrew, oldest first, with its proof."""
    proofs = r.lrange(keyspace.person(pid, consent_rules.LOG_FACET), 0, -1)
    return consent_rules.consent_view(proofs, {})["history"]


def _matrix_row(config: Config, pid: str) -> dict[str, Any] | None:
    row = snapshots.snapshot_row(config, pid)
    if row is None:
        return None
    row["score_breakdown"] = by_weight(row["score_breakdown"])
    return _plain(row)


def _events(config: Config, ids: list[str], uids: list[str]) -> list[dict[str, Any]]:
    """Return every stored event of the person's ids (and the hits of their cookies that
    were stored without a person, as a bot's are), oldest first, with readable times."""
    if not config.events_dir.exists():
        return []
    theirs = pl.col("person_id").is_in(ids)
    if uids:
        theirs |= pl.col("person_id").is_null() & pl.col("uid").is_in(uids)
    events = scan_events(config.events_dir).filter(theirs).sort("timestamp", "event_id").collect()
    rows = []
    for row in events.iter_rows(named=True):
        for name in ("properties", "traits"):
            row[name] = json.loads(row[name]) if row[name] else {}
        rows.append(_plain(row))
    return rows


def _segment_changes(config: Config, ids: list[str]) -> list[dict[str, Any]]:
    """Return who-entered-and-left records of the person's ids, oldest first."""
    files = sorted((segments_dir(config) / "changes").glob("dt=*/*.parquet"))
    if not files:
        return []
    found = (
        pl.scan_parquet(files)
        .filter(pl.col("person_id").is_in(ids))
        .sort("at", "segment_id")
        .collect()
    )
    return [
        {**row, "at": _iso(datetime.fromtimestamp(row["at"] / 1000, UTC))}
        for row in found.iter_rows(named=True)
    ]


def _plain(value: Any) -> Any:
    """Return a value with its times and dates as ISO strings, inside lists and dicts too."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
