"""Counters shared by every process (kept in one Redis hash) and their Prometheus text form."""

from __future__ import annotations

from typing import Any

import redis

from dmp.storage import keyspace

HELP = {
    "dmp_hits_total": "Hits received by the collectors, by collector and outcome.",
    "dmp_events_stored_total": "Events written to the Parquet event log.",
    "dmp_events_aggregate_total": "Unconsented hits counted only in aggregate.",
    "dmp_events_duplicate_total": "Replayed events dropped by event-id dedup.",
    "dmp_bots_total": "Hits from bots (stored flagged, never made persons).",
    "dmp_merges_total": "Identity merges.",
    "dmp_identity_conflicts_total": "Identity conflicts recorded instead of merging.",
    "dmp_eventlog_files_total": "Parquet files written to the event log.",
    "dmp_eventlog_flush_failures_total": "Event-log flush attempts that failed (retried).",
    "dmp_spool_replayed_total": "Hits replayed from collector spools once Redis was back.",
    "dmp_spool_dropped_total": "Hits lost because a collector's spool was full.",
}


def counter(name: str, **labels: str) -> str:
    """Return the hash field of a counter with labels, in Prometheus sample syntax."""
    if not labels:
        return name
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def hits_counter(collector: str, outcome: str) -> str:
    """Return the field of ``dmp_hits_total`` for one collector and outcome."""
    return counter("dmp_hits_total", collector=collector, outcome=outcome)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def incr(r: redis.Redis | Any, field: str, amount: int = 1) -> None:
    """Add ``amount`` to a counter (``r`` may be a pipeline)."""
    r.hincrby(keyspace.METRICS, field, amount)


def render(r: redis.Redis, gauges: dict[str, float]) -> str:
    """Return every counter and the given gauges in the Prometheus text exposition format."""
    samples = r.hgetall(keyspace.METRICS)
    by_name: dict[str, list[tuple[str, str]]] = {}
    for field, value in samples.items():
        by_name.setdefault(field.split("{", 1)[0], []).append((field, value))
    lines: list[str] = []
    for name in sorted(by_name):
        lines.append(f"# HELP {name} {HELP.get(name, name)}")
        lines.append(f"# TYPE {name} counter")
        lines.extend(f"{field} {value}" for field, value in sorted(by_name[name]))
    seen: set[str] = set()
    for field, value in sorted(gauges.items()):
        name = field.split("{", 1)[0]
        if name not in seen:
            seen.add(name)
            lines.append(f"# TYPE {name} gauge")
        lines.append(f"{field} {value:g}")
    return "\n".join(lines) + "\n"
