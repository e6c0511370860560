"""The audience pull API's answers as they stream: JSON, CSV or Parquet, written a chunk of
rows at a time (a Parquet row group every :data:`ROW_GROUP` rows), never whole in memory.

A body cut short (Redis gone in the middle of a page) ends the chunked response without
its last chunk: HTTP clients report the answer as incomplete, and the page is asked for
again with the same cursor.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dmp.web.audiencefeeds import Rows

MEDIA = {
    "json": "application/json",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
}
ROW_GROUP = 65_536  # rows per Parquet row group (and per piece of body sent)


def stream(
    fmt: str,
    names: Sequence[str],
    chunks: Iterable[Rows],
    head: Mapping[str, Any],
    tail: Mapping[str, Any],
) -> Iterator[bytes]:
    """Yield the body of an answer of rows with columns ``names``: in JSON, ``head``'s
    members, the rows under ``"members"`` (one column) or ``"changes"``, then ``tail``'s."""
    if fmt == "csv":
        return _csv(names, chunks)
    if fmt == "parquet":
        return _parquet(names, chunks)
    return _json(names, chunks, head, tail)


def _csv(names: Sequence[str], chunks: Iterable[Rows]) -> Iterator[bytes]:
    yield (",".join(names) + "\n").encode()
    for columns in chunks:
        if not columns[0]:
            continue
        lines = columns[0] if len(columns) == 1 else map(",".join, zip(*columns, strict=True))
        yield ("\n".join(lines) + "\n").encode()


def _json(
    names: Sequence[str], chunks: Iterable[Rows], head: Mapping[str, Any], tail: Mapping[str, Any]
) -> Iterator[bytes]:
    key = "members" if len(names) == 1 else "changes"
    yield (json.dumps(dict(head), separators=(",", ":"))[:-1] + f',"{key}":[').encode()
    first = True
    for columns in chunks:
        if not columns[0]:
            continue
        if len(columns) == 1:
            rows: list[Any] = columns[0]
        else:
            rows = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
        text = json.dumps(rows, separators=(",", ":"))[1:-1]
        yield (text if first else "," + text).encode()
        first = False
    yield ("]," + json.dumps(dict(tail), separators=(",", ":"))[1:]).encode()


class _Sink:
    """A write-only file for the Parquet writer, whose bytes are taken as they come."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        """Keep ``data`` until it is taken."""
        self.parts.append(bytes(data))
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        """Return how many bytes were written."""
        return self.size

    def flush(self) -> None:
        """Nothing to flush: the bytes wait to be taken."""

    def close(self) -> None:
        """Mark the file closed."""
        self.closed = True

    def take(self) -> bytes:
        """Return the bytes written since the last take."""
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def _parquet(names: Sequence[str], chunks: Iterable[Rows]) -> Iterator[bytes]:
    schema = pa.schema([(name, pa.string()) for name in names])
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")
    pending: list[list[str]] = [[] for _ in names]
    for columns in chunks:
        for kept, column in zip(pending, columns, strict=True):
            kept.extend(column)
        if len(pending[0]) >= ROW_GROUP:
            writer.write_table(pa.table(pending, schema=schema))
            pending = [[] for _ in names]
            yield sink.take()
    if pending[0]:
        writer.write_table(pa.table(pending, schema=schema))
    writer.close()
    yield sink.take()
