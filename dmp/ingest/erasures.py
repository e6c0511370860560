"""Pending erasures as compaction reads them: the members of ``keyspace.ERASURE_PENDING``
turned into a filter over Parquet tables.

A member is ``person:<pid>`` (rows whose ``person_id`` is that id, in any file, or whose
``person_key`` is its key: a segment run's counts keep persons by key,
``segments.personkey``) or an identifier ``uid:<v>``, ``anon:<v>`` or ``user:<v>`` (event
rows carrying it in ``uid``, ``anonymous_id`` or ``user_id``). Other identifier kinds
name no column of a file dmp writes: they have nothing to drop and count as handled.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import redis

from dmp.people.identity import IdKind
from dmp.storage import keyspace
from dmp.storage.parquetfiles import write_parquet_files
from segments.personkey import KEY, keys_of

PERSON = "person"  # the kind of a member naming a person id
# Member kind -> the column whose value it names.
COLUMNS = {
    PERSON: "person_id",
    IdKind.UID.value: "uid",
    IdKind.ANON.value: "anonymous_id",
    IdKind.USER.value: "user_id",
}


def _person_keys(pids: Iterable[str]) -> frozenset[int]:
    """Return the keys of the person ids that are dmp's (other ids name no keyed row)."""
    return frozenset(keys_of(pids).drop_nulls().to_list())


def person_member(pid: str) -> str:
    """Return the pending member that drops a person id's rows from every file."""
    return f"{PERSON}:{pid}"


@dataclass(frozen=True, slots=True)
class Erasures:
    """The members one compaction read, and the column values whose rows they drop."""

    members: frozenset[str] = frozenset()
    # column -> values (person_key: numbers, the person ids' keys; the others: texts)
    values: Mapping[str, frozenset[str] | frozenset[int]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return any(self.values.values())

    def columns(self) -> list[str]:
        """Return the columns that name rows to drop."""
        return sorted(c for c, v in self.values.items() if v)


def parse_members(members: Iterable[str]) -> Erasures:
    """Return the filter ``members`` (``kind:value``) describe."""
    values: dict[str, set[str]] = {}
    kept = frozenset(members)
    for member in kept:
        kind, _, value = member.partition(":")
        if kind in COLUMNS and value:
            values.setdefault(COLUMNS[kind], set()).add(value)
    found: dict[str, frozenset[str] | frozenset[int]] = {c: frozenset(v) for c, v in values.items()}
    found[KEY] = _person_keys(values.get(COLUMNS[PERSON], ()))
    return Erasures(kept, found)


def read_pending(r: redis.Redis) -> Erasures:
    """Return the erasures pending now (the members that this compaction will remove)."""
    return parse_members(r.smembers(keyspace.ERASURE_PENDING))


def remove_handled(r: redis.Redis, members: Iterable[str]) -> int:
    """Remove handled members from the pending set (those added since stay); return how
    many."""
    done = sorted(members)
    for start in range(0, len(done), 10_000):
        r.srem(keyspace.ERASURE_PENDING, *done[start : start + 10_000])
    return len(done)


def drop_mask(
    table: pa.Table | pa.RecordBatch, erasures: Erasures
) -> pa.ChunkedArray | pa.Array | None:
    """Return which rows of ``table`` an erasure names (None when no column can)."""
    mask = None
    for column in erasures.columns():
        if column not in table.schema.names:
            continue
        kind = pa.uint64() if column == KEY else pa.string()
        values = pa.array(sorted(erasures.values[column]), kind)
        hit = pc.fill_null(pc.is_in(table.column(column), value_set=values), False)
        mask = hit if mask is None else pc.or_(mask, hit)
    return mask


def count_dropped(mask: pa.ChunkedArray | pa.Array | None) -> int:
    """Return how many rows a :func:`drop_mask` names."""
    return 0 if mask is None else int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)


def members_in(table: pa.Table, erasures: Erasures) -> set[str]:
    """Return the members that name rows of ``table``."""
    kinds = {column: kind for kind, column in COLUMNS.items()}
    found: set[str] = set()
    for column in erasures.columns():
        if column not in table.schema.names:
            continue
        present = pc.unique(pc.drop_null(table.column(column))).to_pylist()
        hits = set(present) & erasures.values[column]
        found |= {f"{kinds[column]}:{v}" for v in hits}  # (event files: no person_key)
    return found


def erase_files(
    paths: list[Path], erasures: Erasures, tick: Callable[[int], None]
) -> tuple[int, int]:
    """Rewrite (same name, whole or not at all) each of ``paths`` that holds a row the
    erasures name, without those rows; return (files rewritten, rows dropped)."""
    files = dropped = 0
    for path in paths:
        source = pq.ParquetFile(path)
        mask = drop_mask(source.read(columns=_columns(source, erasures)), erasures)
        if n := count_dropped(mask):
            stat = path.stat()
            write_parquet_files([source.read().filter(pc.invert(mask))], [path])
            # Keep its time: snapshots and runs are pruned oldest-written first.
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            files, dropped = files + 1, dropped + n
        tick(1)
    return files, dropped


def members_left(paths: list[Path], erasures: Erasures) -> set[str]:
    """Return the members with rows in ``paths`` (files gone meanwhile hold none)."""
    left: set[str] = set()
    for path in paths:
        try:
            source = pq.ParquetFile(path)
            left |= members_in(source.read(columns=_columns(source, erasures)), erasures)
        except FileNotFoundError:
            continue
    return left


def _columns(source: pq.ParquetFile, erasures: Erasures) -> list[str]:
    return [c for c in erasures.columns() if c in source.schema_arrow.names]
