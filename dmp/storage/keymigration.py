"""Renaming the Redis keys of earlier versions once: keyspace version 2, the hash tags.

Version 2 put configuration and bookkeeping under the ``{dmp}`` tag and gave a segment's
member set and an import's row digests slots of their own (``dmp.storage.keyspace``),
so that a Redis Cluster can hold dmp. An installation from before keeps its keys under
the old names; the first dmp process that finds them renames them (``RENAMENX``: a
migration cut short goes on where it stopped; a key already under its new name is never
overwritten) and then records the version. The single stream's keys (its stream, seen
digests, aggregates, counters) keep their names: partition 0's worker drains them and
readers add their counts in (``keyspace.LEGACY``).

On one Redis server a rename crosses no slots. On a Redis Cluster the old names cannot
be renamed in place: run dmp once against the old server, then move the data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import redis
from redis.cluster import RedisCluster

from dmp.storage import keyspace, locks

log = logging.getLogger(__name__)

VERSION = "2"

# Version 1's names of single keys, and their names now.
_SINGLE = {
    "dmp:log:merges": keyspace.MERGES,
    "dmp:log:conflicts": keyspace.CONFLICTS,
    "dmp:sites": keyspace.SITES,
    "dmp:worker:epoch": keyspace.WORKER_EPOCH,
    "dmp:apikeys": keyspace.API_KEYS,
    "dmp:config:scoring": keyspace.SCORING_MODEL,
    "dmp:config:catalog": keyspace.CONTENT_CATALOG,
    "dmp:matrix:touched": keyspace.MATRIX_TOUCHED,
    "dmp:segments": keyspace.SEGMENTS,
    "dmp:segments:runs": keyspace.SEGMENT_RUNS,
    "dmp:segments:applied": keyspace.SEGMENTS_APPLIED,
    "dmp:segments:lock": keyspace.SEGMENTS_LOCK,
    "dmp:segments:live": keyspace.SEGMENTS_LIVE,
    "dmp:segments:deleted": keyspace.SEGMENTS_DELETED,
    "dmp:segments:requested": keyspace.SEGMENTS_RUN_REQUESTED,
    "dmp:segments:setslock": keyspace.SEGMENTS_SETS_LOCK,
    "dmp:eventlog:flush": keyspace.EVENTLOG_FLUSH,
    "dmp:erasure:pending": keyspace.ERASURE_PENDING,
    "dmp:erasure:log": keyspace.ERASURE_LOG,
    "dmp:erasure:salt": keyspace.ERASURE_SALT,
    "dmp:compaction:lock": keyspace.COMPACTION_LOCK,
    "dmp:compaction:last": keyspace.COMPACTION_LAST,
    "dmp:migrated:consents-per-identifier": keyspace.MIGRATED_CONSENTS,
    "dmp:destinations": keyspace.DESTINATIONS,
    "dmp:audiences:secret": keyspace.AUDIENCE_CURSOR_SECRET,
    "dmp:users": keyspace.USERS,
    "dmp:ui:secret": keyspace.UI_SECRET,
}


def _segment(rest: str) -> str:
    sid, _, facet = rest.partition(":")
    return keyspace.segment(sid, facet)


def _destination(rest: str) -> str:
    name, _, facet = rest.partition(":")  # a facet may hold colons (sync:<segment>)
    return keyspace.destination(name, facet)


def _import(rest: str) -> str:
    source, _, facet = rest.rpartition(":")
    return keyspace.imported_rows(source) if facet == "rows" else ""


# Version 1's families of keys: what their names began with, and the name now of the rest.
_FAMILIES: dict[str, Callable[[str], str]] = {
    "dmp:site:": keyspace.site,
    "dmp:writekey:": keyspace.write_key,
    "dmp:apikey:": keyspace.api_key,
    "dmp:user:": keyspace.user,
    "dmp:control:queued:": keyspace.control_queued,
    "dmp:control:plan:": keyspace.control_plan,
    "dmp:control:result:": keyspace.control_result,
    "dmp:segment:": _segment,
    "dmp:destination:": _destination,
    "dmp:import:": _import,
}


class KeyspaceError(RuntimeError):
    """Keys of an earlier version that cannot be renamed where they are."""


def renames(r: redis.Redis) -> Iterator[tuple[str, str]]:
    """Yield (old name, new name) for every key of version 1 in Redis."""
    if r.exists(*_SINGLE):
        for old, new in _SINGLE.items():
            if r.exists(old):
                yield old, new
    for prefix, rename in _FAMILIES.items():
        for key in r.scan_iter(match=prefix + "*", count=1000):
            rest = key[len(prefix) :]
            if rest.startswith("{"):  # a name of version 2 that begins alike
                continue
            new = rename(rest)
            if new and new != key:
                yield key, new


def ensure_current(r: redis.Redis) -> int:
    """Rename the keys of earlier versions unless done; return how many were renamed.

    One process at a time renames (a lock); the others wait for it. Raise
    KeyspaceError on a Redis Cluster that holds names of version 1.
    """
    if r.get(keyspace.KEYSPACE_VERSION) == VERSION:
        return 0
    with locks.hold(r, keyspace.KEYSPACE_LOCK, 60, "another dmp process renames the keys"):
        if r.get(keyspace.KEYSPACE_VERSION) == VERSION:
            return 0
        moved = kept = 0
        for old, new in renames(r):
            if isinstance(r, RedisCluster):  # a rename would cross slots
                raise KeyspaceError(
                    f"this Redis Cluster holds keys of an earlier dmp version ({old}); run "
                    "dmp once against the single Redis server they come from, then move them"
                )
            if r.renamenx(old, new):
                moved += 1
            else:
                kept += 1
                log.warning("keyspace: %s and %s both exist; %s is left as it is", old, new, old)
        r.set(keyspace.KEYSPACE_VERSION, VERSION)
    if moved or kept:
        log.info("keyspace: renamed %d keys of earlier versions (version %s)", moved, VERSION)
    return moved
