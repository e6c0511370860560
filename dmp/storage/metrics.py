"""Counters shared by every process (kept in one Redis hash) and their Prometheus collector."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, Metric, UnknownMetricFamily
from prometheus_client.registry import Collector

from dmp.storage import keyspace

log = logging.getLogger(__name__)

HELP = {
    "dmp_hits_total": "Hits received by the collectors, by collector and outcome.",
    "dmp_hits_set_aside_total": (
        "Hits the collectors accepted that the ingest worker set aside: bots (stored"
        " flagged) and hits without analytics consent (counted in aggregate only), by"
        " collector and reason."
    ),
    "dmp_cookie_not_returned_total": (
        "Tag hits whose browser did not send back the dmp_uid cookie dmp set (dmp on another"
        " site than the page: the tag-held id is used), by site."
    ),
    "dmp_events_aggregate_total": "Unconsented hits counted only in aggregate.",
    "dmp_events_duplicate_total": "Replayed events dropped by event-id dedup.",
    "dmp_events_erased_identifier_total": (
        "Hits naming an identifier of an erased person (counted only in aggregate)."
    ),
    "dmp_stream_unreadable_total": "Stream entries the worker could not read (dropped).",
    "dmp_bots_total": "Hits from bots (stored flagged, never made persons).",
    "dmp_merges_total": "Identity merges.",
    "dmp_identity_conflicts_total": "Identity conflicts recorded instead of merging.",
    "dmp_returning_hits_again_total": (
        "Returning hits (several partitions) whose lock-free write found their person merged,"
        " erased or being merged by another worker: handled again under the identity lock."
    ),
    "dmp_eventlog_flush_failures_total": "Event-log flush attempts that failed (retried).",
    "dmp_spool_replayed_total": "Hits replayed from collector spools once Redis was back.",
    "dmp_spool_dropped_total": "Hits lost because a collector's spool was full.",
    "dmp_export_rows_total": "Rows exporters sent to a destination (sent) or it refused (failed).",
    "dmp_export_retries_total": "Requests to a destination retried (throttled, 5xx, broken).",
    "dmp_export_syncs_total": "Destination syncs, by how they ended.",
}

# The inverse of counter(): a metric name, then optionally {label="value",...} with the
# value escaped as _escape writes it. Anything else in the hash is not a counter of ours.
_FIELD = re.compile(r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?", re.DOTALL)
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|\Z)')
_ESCAPED = re.compile(r"\\(.)")

Labels = tuple[tuple[str, str], ...]


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


def parse_counter(field: str) -> tuple[str, dict[str, str]] | None:
    """Return the name and labels of a hash field written by ``counter``, None if malformed."""
    match = _FIELD.fullmatch(field)
    if match is None:
        return None
    labels: dict[str, str] = {}
    inner, pos = match["labels"] or "", 0
    while pos < len(inner):
        label = _LABEL.match(inner, pos)
        if label is None or label[1] in labels:
            return None
        labels[label[1]] = _ESCAPED.sub(lambda m: "\n" if m[1] == "n" else m[1], label[2])
        pos = label.end()
    return match["name"], labels


def ingest_partitions(r: redis.Redis) -> list[keyspace.PartitionKeys]:
    """Return the keys of every ingest partition ever used (their counters add up)."""
    most = int(r.hget(keyspace.INGEST_PARTITIONS, "most") or 1)
    return [keyspace.partition(p) for p in range(most)]


def counter_keys(r: redis.Redis) -> list[str]:
    """Return every hash of counters: the shared one (collectors, exporters, the API),
    the one of earlier versions, and each ingest partition's (what its flushes committed)."""
    return [
        keyspace.METRICS,
        keyspace.LEGACY_METRICS,
        *(p.metrics for p in ingest_partitions(r)),
    ]


def read_counter(r: redis.Redis, field: str) -> int:
    """Return one counter summed over every hash of counters."""
    with r.pipeline(transaction=False) as pipe:
        for key in counter_keys(r):
            pipe.hget(key, field)
        return sum(int(v or 0) for v in pipe.execute())


def incr(r: redis.Redis | Any, field: str, amount: int = 1) -> None:
    """Add ``amount`` to a counter (``r`` may be a pipeline)."""
    r.hincrby(keyspace.METRICS, field, amount)


class CounterCollector(Collector):
    """The counters in the Redis hash, as Prometheus metric families (read at each collect)."""

    def __init__(self, r: redis.Redis) -> None:
        self.r = r

    def collect(self) -> Iterator[Metric]:
        """Yield one family per counter name; names not ending in ``_total`` are untyped."""
        by_name: dict[str, dict[Labels, float]] = {}
        skipped: list[str] = []
        with self.r.pipeline(transaction=False) as pipe:
            for key in counter_keys(self.r):
                pipe.hgetall(key)
            hashes = pipe.execute()
        fields = [item for found in hashes for item in found.items()]
        for field, value in fields:
            parsed = parse_counter(field)
            try:
                number = float(value)
            except ValueError:
                parsed = None
            if parsed is None:
                skipped.append(field)
                continue
            samples = by_name.setdefault(parsed[0], {})
            key = tuple(sorted(parsed[1].items()))
            samples[key] = samples.get(key, 0.0) + number
        if skipped:
            log.debug(
                "/metrics skips %d malformed field(s) of %s: %r",
                len(skipped),
                keyspace.METRICS,
                sorted(skipped),
            )
        for name in sorted(by_name):
            yield _family(name, by_name[name])


def _family(name: str, samples: dict[Labels, float]) -> Metric:
    """Return the family of one counter name; a label a sample lacks is written empty."""
    label_names = sorted({k for labels in samples for k, _ in labels})
    kind = CounterMetricFamily if name.endswith("_total") else UnknownMetricFamily
    # CounterMetricFamily drops the _total from its own name and writes it on each sample.
    family = kind(name, HELP.get(name, name), labels=label_names)
    for labels, value in sorted(samples.items()):
        given = dict(labels)
        family.add_metric([given.get(k, "") for k in label_names], value)
    return family
