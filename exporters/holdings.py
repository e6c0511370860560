"""Rows by person, kept in Parquet: what a destination holds, and the plan of a sync.

A destination's *holding* for a segment is every row it acknowledged, sorted by person
id; a *plan* is the rows a sync is about to remove and add, each sorted by person id.
Both are streamed in row groups (a million members never sit in memory) and written
whole or not at all (a temporary name, fsync, rename: see ``dmp.storage.parquetfiles``).

Each row carries a fingerprint (64 bits of BLAKE2b over its values): a sync compares
fingerprints, not rows. A plan's add may name the fingerprint of the held row it
*supersedes* (an upsert of a newsletter contact whose name changed): once acknowledged,
that held row is gone and the new one held.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.parquet as pq

from dmp.storage.parquetfiles import sync_dir, tmp_name
from exporters.destination import Row

GROUP_ROWS = 10_000  # rows per Parquet row group (and per read)
COLUMNS_KEY = b"dmp.columns"  # schema metadata: the destination's row columns, \x1f-joined


@dataclass(frozen=True, slots=True)
class Entry:
    """One row of a holding or a plan."""

    person_id: str
    fp: int
    row: Row
    supersedes: int = 0  # plan adds: the fingerprint of the held row this one replaces


def fingerprint(row: Row) -> int:
    """Return a row's 64-bit fingerprint (signed, as Parquet's int64 keeps it)."""
    digest = hashlib.blake2b("\x1f".join(row).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def schema(columns: tuple[str, ...]) -> pa.Schema:
    """Return the Parquet schema of entries whose rows have ``columns``."""
    fields = [("person_id", pa.string()), ("fp", pa.int64()), ("supersedes", pa.int64())]
    fields += [(f"v{i}", pa.string()) for i in range(len(columns))]
    return pa.schema(fields, metadata={COLUMNS_KEY: "\x1f".join(columns).encode()})


class EntryWriter:
    """Writes entries to ``path`` (in order) and puts the file in place on close; a
    writer left by an exception leaves nothing behind."""

    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.width, self.rows = path, len(columns), 0
        self.schema = schema(columns)
        self._fh = open(tmp_name(path), "wb")  # noqa: SIM115 (closed in close/abort)
        self._writer = pq.ParquetWriter(self._fh, self.schema, compression="zstd")
        self._pending: list[Entry] = []

    def write(self, entry: Entry) -> None:
        """Append one entry."""
        self._pending.append(entry)
        if len(self._pending) >= GROUP_ROWS:
            self._flush()

    def write_all(self, entries: Iterable[Entry]) -> None:
        """Append entries."""
        for entry in entries:
            self.write(entry)

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        columns = [
            pa.array([e.person_id for e in pending], pa.string()),
            pa.array([e.fp for e in pending], pa.int64()),
            pa.array([e.supersedes for e in pending], pa.int64()),
        ]
        columns += [pa.array([e.row[i] for e in pending], pa.string()) for i in range(self.width)]
        self._writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=self.schema))
        self.rows += len(pending)

    def close(self) -> None:
        """Write what is pending, fsync, and rename the file into place."""
        self._flush()
        self._writer.close()
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(tmp_name(self.path), self.path)
        sync_dir(self.path.parent)

    def abort(self) -> None:
        """Drop what was written."""
        self._writer.close()
        self._fh.close()
        tmp_name(self.path).unlink(missing_ok=True)

    def __enter__(self) -> EntryWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def read_entries(path: Path | None) -> Iterator[Entry]:
    """Yield the entries of a file in order (none when ``path`` is None or absent)."""
    if path is None or not path.exists():
        return
    for batch in pq.ParquetFile(path).iter_batches(batch_size=GROUP_ROWS):
        columns = [c.to_pylist() for c in batch.columns]
        pids, fps, supers, values = columns[0], columns[1], columns[2], columns[3:]
        rows = zip(*values, strict=True) if values else ((),) * len(pids)
        for pid, fp, sup, row in zip(pids, fps, supers, rows, strict=True):
            yield Entry(pid, fp, tuple(row), sup)


def columns_of(path: Path) -> tuple[str, ...]:
    """Return the row columns a file was written with."""
    meta = pq.read_schema(path).metadata or {}
    text = meta.get(COLUMNS_KEY, b"").decode()
    return tuple(text.split("\x1f")) if text else ()


def count(path: Path | None) -> int:
    """Return how many entries a file holds (0 when absent)."""
    if path is None or not path.exists():
        return 0
    return pq.ParquetFile(path).metadata.num_rows


def acked(path: Path, done: int, op: str, refused: set[str]) -> Iterator[Entry]:
    """Yield a plan file's first ``done`` entries but those the platform refused
    (``refused`` holds ``<op>:<row number>``)."""
    for i, entry in enumerate(islice(read_entries(path), done)):
        if f"{op}:{i}" not in refused:
            yield entry


def chunks(entries: Iterator[Entry], size: int) -> Iterator[list[Entry]]:
    """Yield entries ``size`` at a time (a batch each)."""
    while chunk := list(islice(entries, size)):
        yield chunk
