"""Which files of the event log hold a person's events: an index kept in memory.

The live lane (:mod:`dmp.membership.live`) needs the whole history of the few persons a
new file names. The log is in arrival order, so their rows are spread over every day of
it; scanning all of it for them costs a read of every person id (20M rows at a million
persons) on every tick. The index keeps, per file, the hashes of the person ids in it
(64 bits each, one row per person and file), so a tick reads only the files that may
hold its persons: those of their visits, not those of everyone else.

The index is only a filter. A hash collision names a file too many, which the read's own
filter on the person ids drops; no file holding a person is ever left out, as long as
every file of the log is indexed: :meth:`LogIndex.update` indexes the files it has not
seen and forgets those gone (files are never rewritten under their name: a flush, a
compaction and an undone flush's retry each write new names).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

import polars as pl

log = logging.getLogger(__name__)

SEED = 0x646D70  # any fixed seed: hashes are compared only within one process
BATCH = 256  # files read per scan while indexing
MAX_CHUNKS = 64  # a file's pairs are a chunk of their own until this many (then one copy)


def person_hashes(persons: pl.Expr) -> pl.Expr:
    """Return the index's hash of person ids (one place for both sides of a lookup)."""
    return persons.hash(SEED)


class LogIndex:
    """Person-id hashes per event-log file (relative paths under ``root``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.names: list[str] = []  # a file's number in ``pairs`` is its place here
        self.numbers: dict[str, int] = {}
        self.pairs = pl.DataFrame(schema={"hash": pl.UInt64, "file": pl.UInt32})

    def __len__(self) -> int:
        return len(self.numbers)

    def update(self, files: Iterable[str]) -> list[str]:
        """Make the index hold exactly ``files`` (the log as listed now): index the new
        ones, forget the ones gone. Return the newly indexed ones, sorted."""
        listed = set(files)
        new = sorted(listed - self.numbers.keys())
        gone = [self.numbers.pop(f) for f in list(self.numbers) if f not in listed]
        if gone:
            self.pairs = self.pairs.filter(~pl.col("file").is_in(gone))
        if new:
            started = time.perf_counter()
            first = len(self.names)
            frames = [
                _pairs(self.root, new[i : i + BATCH], first + i) for i in range(0, len(new), BATCH)
            ]
            # Numbered once every one is read: a file that cannot be read (it vanished)
            # raises before any is numbered, so none is left half indexed.
            self.numbers |= {name: first + i for i, name in enumerate(new)}
            self.names += new
            self.pairs = pl.concat([self.pairs, *frames])
            if self.pairs.n_chunks() > MAX_CHUNKS:
                self.pairs = self.pairs.rechunk()
            seconds = time.perf_counter() - started
            level = logging.INFO if seconds >= 1 else logging.DEBUG
            log.log(level, "event log index: %d files indexed in %.2f s", len(new), seconds)
        return new

    def files_of(self, persons: Iterable[str]) -> list[str]:
        """Return the indexed files that may hold events of ``persons``, sorted."""
        wanted = pl.Series("p", list(persons), pl.Utf8)
        if wanted.is_empty() or self.pairs.is_empty():
            return []
        hashes = wanted.to_frame().select(person_hashes(pl.col("p")))["p"]
        numbers = self.pairs.filter(pl.col("hash").is_in(hashes.implode()))["file"].unique()
        return sorted(self.names[n] for n in numbers.to_list())


def _pairs(root: Path, files: list[str], first: int) -> pl.DataFrame:
    """Return the (hash, file) pairs of ``files``, numbered from ``first`` on."""
    paths = [str(root / f) for f in files]
    numbers = pl.DataFrame(
        {"path": paths, "file": range(first, first + len(files))},
        schema={"path": pl.Utf8, "file": pl.UInt32},
    )
    return (
        pl.scan_parquet(paths, include_file_paths="path", hive_partitioning=False)
        .filter(pl.col("person_id").is_not_null())
        .select(person_hashes(pl.col("person_id")).alias("hash"), "path")
        .unique()
        .collect()
        .join(numbers, on="path")
        .select("hash", "file")
    )
