"""The ingest worker's events handed to the live lane before their flush.

A visit reaches the event log at the worker's next flush (``flush_seconds``: 2 s by
default, so on average a second). The live lane (:mod:`dmp.membership.live`), which runs
in the same process, need not wait for it: after each batch the worker hands it the rows
the batch added to its buffer (:meth:`LiveFeed.taken`, cheap: the same tuples), and
after each flush says that the buffer's rows are in files now (:meth:`LiveFeed.done`),
which also wakes the lane for the files.

Evaluating rows before their file exists is safe: they are durable already (their stream
entries stay pending until the flush that writes them commits and acks them, and a
failed or abandoned flush leaves them to be read again). The lane reads a person's history
from the files and from the rows not flushed yet, each event once (by ``event_id``: a
flush that lands between the two reads shows its rows in both).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from dmp.ingest.eventlog import rows_table

Row = tuple[Any, ...]  # an event row in EVENT_SCHEMA's column order (dmp.ingest.eventlog)


class LiveFeed:
    """Buffered rows by buffer number, and the numbers flushed since the lane last looked."""

    def __init__(self) -> None:
        self.woken = threading.Event()  # set by every hand-over: the lane waits on it
        self._lock = threading.Lock()
        self._taken: list[tuple[int, list[Row]]] = []
        self._done: list[tuple[int, list[str]]] = []
        self._numbers = itertools.count(1)

    def number(self) -> int:
        """Return a number for a new buffer (unique across the process's workers)."""
        return next(self._numbers)

    def taken(self, buffer: int, rows: list[Row]) -> None:
        """Hand over ``rows`` just added to buffer ``buffer`` (worker thread)."""
        with self._lock:
            self._taken.append((buffer, rows))
        self.woken.set()

    def done(self, buffer: int, files: list[str]) -> None:
        """Say that buffer ``buffer``'s rows, every one of them handed over, are in
        ``files`` now (event-log paths, relative to it), or will be read again from the
        stream (no files: its flush failed or was abandoned): the lane lets go of them,
        and need not evaluate the files' persons again."""
        with self._lock:
            self._done.append((buffer, files))
        self.woken.set()

    def drain(self) -> tuple[list[tuple[int, list[Row]]], list[tuple[int, list[str]]]]:
        """Return (rows handed over, buffers done) since the last call, in order."""
        with self._lock:
            taken, self._taken = self._taken, []
            done, self._done = self._done, []
        return taken, done


class Unflushed:
    """The lane's copy of the rows handed over and not flushed yet, by buffer number.

    The lane asks for them as one table on every tick (after each of the worker's
    batches), so each row is made a table row once, when first asked for, and kept so:
    converting all of them on every tick cost a pixel hit about 40 µs of the worker's CPU
    at 3,500 hits/s (BENCHMARKS.md, "The pixel: the live lane ticked on every batch").

    A buffer that is never said done (a worker that lost its lease drops its buffer
    without a flush) is let go after ``keep_seconds``: its rows come back from the
    stream through whichever worker reads them again."""

    def __init__(
        self,
        keep_seconds: float = 60.0,
        to_table: Callable[[list[Row]], pa.Table] = rows_table,
    ) -> None:
        self.keep_seconds = keep_seconds
        self._to_table = to_table
        self._rows: dict[int, list[Row]] = {}  # not a table's yet
        self._tables: dict[int, list[pa.Table]] = {}
        self._since: dict[int, float] = {}

    def __len__(self) -> int:
        rows = sum(len(rows) for rows in self._rows.values())
        return rows + sum(t.num_rows for tables in self._tables.values() for t in tables)

    def take(
        self, taken: list[tuple[int, list[Row]]], done: list[tuple[int, list[str]]]
    ) -> tuple[list[Row], set[str]]:
        """Add what :meth:`LiveFeed.drain` returned; return the rows handed over now and
        the files the lane had every row of (those of buffers done)."""
        now = time.monotonic()
        fresh: list[Row] = []
        for buffer, rows in taken:
            self._rows.setdefault(buffer, []).extend(rows)
            self._tables.setdefault(buffer, [])
            self._since.setdefault(buffer, now)
            fresh += rows
        old = [b for b, t in self._since.items() if now - t > self.keep_seconds]
        for buffer in [*(b for b, _ in done), *old]:
            self._rows.pop(buffer, None)
            self._tables.pop(buffer, None)
            self._since.pop(buffer, None)
        return fresh, {f for _, files in done for f in files}

    def table(self) -> pa.Table | None:
        """Return every row not flushed yet, buffer by buffer in the order they were
        handed over (None: there are none)."""
        for buffer, rows in self._rows.items():
            if rows:
                self._tables[buffer].append(self._to_table(rows))
                self._rows[buffer] = []
        tables = [t for tables in self._tables.values() for t in tables]
        return pa.concat_tables(tables) if tables else None
