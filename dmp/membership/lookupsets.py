"""The lookup sets: ``dmp:segment:{m:<id>}:members`` and ``dmp:person:{pid}:segments`` in Redis,
what the lookup API and exporters read. A run moves them by its changes (or rewrites them
from its snapshot when they are behind); the live lane moves single persons between runs."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import polars as pl
import redis

from dmp.storage import keyspace, locks

MEMBER_SCHEMA = {"segment_id": pl.Utf8, "person_id": pl.Utf8}

log = logging.getLogger(__name__)


CHUNK = 10_000  # Redis commands per pipeline


def apply_run(
    r: redis.Redis,
    manifest: dict[str, Any],
    members: pl.DataFrame,
    changes: pl.DataFrame,
    previous: dict[str, Any] | None,
) -> None:
    """Move the Redis sets by the changes, or rewrite them if they are not at ``previous``.
    The live lane moves sets while a run computes: persons it moved after this run's
    as-of time keep what it gave them (newer than what the run saw)."""
    # The files are written: wait for a tick to finish rather than give up (a run that
    # gives up here leaves the sets behind; the next run would rewrite them).
    with sets_lock(r, 300):
        newer = set(r.zrangebyscore(keyspace.SEGMENTS_LIVE, f"({manifest['as_of']}", "+inf"))
        applied = r.get(keyspace.SEGMENTS_APPLIED)
        if previous is None or applied != previous["run_id"]:
            log.info("segments: the lookup sets are rewritten from this run's snapshot")
            _rewrite(r, _with_current(r, members, newer))
        else:
            rows = changes.select("segment_id", "person_id", "change").iter_rows()
            _send(
                r,
                (
                    _moves(sid, pid, change == "entered")
                    for sid, pid, change in rows
                    if pid not in newer
                ),
            )
        _settle_live(r, members, set(manifest["members"]), manifest["as_of"])
        _drop_deleted(r, set(manifest["members"]))
    with r.pipeline(transaction=True) as pipe:
        for sid, size in manifest["members"].items():
            if sid in manifest["failed"]:  # not run: its last run stays its last run
                continue
            pipe.hset(
                keyspace.segment(sid), mapping={"members": size, "last_run": manifest["run_id"]}
            )
        pipe.set(keyspace.SEGMENTS_APPLIED, manifest["run_id"])
        pipe.execute()


def sets_lock(r: redis.Redis, wait_seconds: float) -> AbstractContextManager[locks.Lease]:
    """Hold the lock of the lookup sets' one mover at a time (runs and live ticks)."""
    return locks.hold(r, keyspace.SEGMENTS_SETS_LOCK, wait_seconds, "the lookup sets are moving")


def move_sets(
    r: redis.Redis, desired: dict[str, set[str]], known: set[str], noted_at: int | None = None
) -> int:
    """Make each person's lookup sets (among the ``known`` segments) the ``desired`` ones,
    both directions; return the memberships added or removed. ``noted_at`` (the live
    lane's as-of time) notes every person given, moved or not, for runs: a run that saw
    older data leaves them be, the next one settles them (a note only ever moves on)."""
    moved, pids = 0, list(desired)
    for start in range(0, len(pids), CHUNK // 4):
        chunk = pids[start : start + CHUNK // 4]
        with r.pipeline(transaction=False) as pipe:
            for pid in chunk:
                pipe.smembers(keyspace.person(pid, "segments"))
            current = pipe.execute()
        if noted_at is not None:  # noted first: the next run settles them, whatever follows
            r.zadd(keyspace.SEGMENTS_LIVE, dict.fromkeys(chunk, noted_at), gt=True)
        # The segments' sets, then the persons' own: these are what the next move diffs
        # against, so a move cut short between the two is repeated whole (SADD and SREM
        # are idempotent). Two sends: a cluster pipeline keeps order per node only.
        mine: list[tuple[str, str, str]] = []
        with r.pipeline(transaction=False) as pipe:
            for pid, was in zip(chunk, current, strict=True):
                now = desired[pid]
                for verb, sids in (("SADD", now - was), ("SREM", (was & known) - now)):
                    for sid in sids:
                        pipe.execute_command(verb, keyspace.segment(sid, "members"), pid)
                        mine.append((verb, keyspace.person(pid, "segments"), sid))
            pipe.execute()
        if mine:
            with r.pipeline(transaction=False) as pipe:
                for cmd in mine:
                    pipe.execute_command(*cmd)
                pipe.execute()
        moved += len(mine)
    return moved


def _settle_live(r: redis.Redis, members: pl.DataFrame, known: set[str], as_of: int) -> None:
    """Set the persons the live lane moved up to this run's as-of time to what the run
    found (a run is the word on everyone: a window may have closed between a tick and the
    run). Moves made after it (a run on an older matrix) stay for a later run."""
    live = list(r.zrangebyscore(keyspace.SEGMENTS_LIVE, "-inf", as_of))
    if not live:
        return
    found = members.filter(pl.col("person_id").is_in(live))
    desired: dict[str, set[str]] = {pid: set() for pid in live}
    for sid, pid in found.iter_rows():
        desired[pid].add(sid)
    move_sets(r, desired, known)
    r.zrem(keyspace.SEGMENTS_LIVE, *live)


def _drop_deleted(r: redis.Redis, known: set[str]) -> None:
    """Empty the lookup sets of deleted segments (the live lane may have added members
    that no run ever recorded)."""
    for sid in r.smembers(keyspace.SEGMENTS_DELETED):
        if sid in known:  # made again since: its sets are this run's
            r.srem(keyspace.SEGMENTS_DELETED, sid)
            continue
        key = keyspace.segment(sid, "members")
        pids = list(r.smembers(key))
        for start in range(0, len(pids), CHUNK):
            with r.pipeline(transaction=False) as pipe:
                for pid in pids[start : start + CHUNK]:
                    pipe.srem(keyspace.person(pid, "segments"), sid)
                pipe.execute()
        r.delete(key)
        r.srem(keyspace.SEGMENTS_DELETED, sid)


def _moves(sid: str, pid: str, entered: bool) -> list[tuple[str, str, str]]:
    verb = "SADD" if entered else "SREM"
    return [
        (verb, keyspace.segment(sid, "members"), pid),
        (verb, keyspace.person(pid, "segments"), sid),
    ]


def _send(r: redis.Redis, commands: Iterator[list[tuple[str, str, str]]]) -> None:
    pipe, n = r.pipeline(transaction=False), 0
    for group in commands:
        for cmd in group:
            pipe.execute_command(*cmd)
            n += 1
        if n >= CHUNK:
            pipe.execute()
            pipe, n = r.pipeline(transaction=False), 0
    if n:
        pipe.execute()


def _with_current(r: redis.Redis, members: pl.DataFrame, pids: set[str]) -> pl.DataFrame:
    """Return ``members`` with ``pids``' memberships as their lookup sets hold them now."""
    if not pids:
        return members
    ordered = sorted(pids)
    with r.pipeline(transaction=False) as pipe:
        for pid in ordered:
            pipe.smembers(keyspace.person(pid, "segments"))
        current = pipe.execute()
    rows = [(sid, pid) for pid, sids in zip(ordered, current, strict=True) for sid in sids]
    theirs = pl.DataFrame(rows, schema=MEMBER_SCHEMA, orient="row")
    return pl.concat([members.filter(~pl.col("person_id").is_in(ordered)), theirs])


def _rewrite(r: redis.Redis, members: pl.DataFrame) -> None:
    """Replace every lookup set by the memberships given, never leaving one empty on the
    way: each segment's and each person's set is filled under a new name and renamed over
    the old one (in its own slot), then sets of no one's are removed."""
    keep_segments, keep_persons = set(), set()
    for (sid,), part in members.partition_by("segment_id", as_dict=True).items():
        key = keyspace.segment(sid, "members")
        fresh = keyspace.segment(sid, "members-rewrite")
        ids = part["person_id"].to_list()
        r.delete(fresh)
        for start in range(0, len(ids), CHUNK):
            r.sadd(fresh, *ids[start : start + CHUNK])
        r.rename(fresh, key)
        keep_segments.add(key)
    by_person = members.group_by("person_id").agg(pl.col("segment_id").sort())
    rows = by_person.iter_rows()
    while chunk := list(itertools.islice(rows, CHUNK // 4)):
        # Each person's set filled under a new name and renamed over the old one, in the
        # person's slot (RENAME through execute_command: a cluster pipeline refuses
        # ``rename`` but keeps the order of one slot's commands).
        with r.pipeline(transaction=False) as pipe:
            for pid, sids in chunk:
                key, fresh = keyspace.person(pid, "segments"), keyspace.person(pid, "segments-new")
                pipe.delete(fresh)
                pipe.sadd(fresh, *sids)
                pipe.execute_command("RENAME", fresh, key)
                keep_persons.add(key)
            pipe.execute()
    stale = [
        *(
            k
            for k in r.scan_iter(match=keyspace.segment_pattern("members"), count=1000)
            if k not in keep_segments
        ),
        *(
            k
            for k in r.scan_iter(match=keyspace.person_pattern("segments"), count=1000)
            if k not in keep_persons
        ),
    ]
    for start in range(0, len(stale), CHUNK):
        r.delete(*stale[start : start + CHUNK])
