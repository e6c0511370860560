"""File imports (CRM, newsletter): read a table, map its columns, turn rows into hits.

An import goes through the ingest stream like every hit, so identity resolution, tiers
and the event log treat it as any touchpoint. Each good row becomes one hit whose event
id is a digest of the row's mapped values; a Redis set per source remembers the digests
imported, so importing the same file twice adds nothing twice. Bad rows are reported
with their row number and reason; the good rows are kept.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import redis

from collectors.eventtime import EventTimeError, parse_event_time
from dmp.ingest import stream
from dmp.people import erasure
from dmp.people.identity import identifiers_of
from dmp.records import Hit
from dmp.storage import keyspace

CHUNK = 1000  # rows enqueued per MULTI


class ImportFileError(ValueError):
    """A file that cannot be imported at all (unreadable, or a required column missing)."""


class RowError(ValueError):
    """A row that cannot be imported; the message says which field and why."""


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row left out of an import, numbered as a spreadsheet shows it (header is row 1)."""

    row: int
    reason: str


@dataclass(slots=True)
class ImportReport:
    """What an import did."""

    rows: int = 0
    new: int = 0
    already: int = 0  # rows imported before (same values): nothing added
    erased: int = 0  # rows of a person erased before: skipped (unless told to take them)
    bad: list[BadRow] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Fields:
    """The fields a source knows, with the column names that mean them by default."""

    aliases: Mapping[str, tuple[str, ...]]  # field -> header spellings (normalised)
    required: tuple[str, ...] = ()


def header_key(name: str) -> str:
    """Return a column header normalised for matching: lower case, runs of non-alnum as _."""
    return re.sub(r"[^0-9a-zäöüß]+", "_", name.strip().lower()).strip("_")


def _as_text(column: pl.Series) -> pl.Series:
    """Return a Parquet column as text; floats that are all whole numbers without '.0'.

    Tools that write a number column with gaps as floats (pandas) make 300 into 300.0,
    which the German-style number reading would take for 3.000 → 3000.
    """
    if column.dtype.is_float():
        present = column.drop_nulls()
        if present.is_finite().all() and (present == present.round(0)).all():
            if present.abs().max() is None or present.abs().max() < 2**53:
                column = column.cast(pl.Int64)
    return column.cast(pl.Utf8)


def read_table(path: Path) -> pl.DataFrame:
    """Return a CSV (comma or semicolon) or Parquet file as a frame of strings."""
    try:
        if path.suffix.lower() == ".parquet":
            frame = pl.read_parquet(path)
            return frame.select(_as_text(frame[name]) for name in frame.columns)
        with open(path, encoding="utf-8-sig") as fh:
            header = fh.readline()
        separator = ";" if header.count(";") > header.count(",") else ","
        return pl.read_csv(
            path,
            separator=separator,
            infer_schema=False,
            encoding="utf8",
        )
    except OSError as exc:
        raise ImportFileError(f"cannot read {path}: {exc}") from None
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        raise ImportFileError(
            f"cannot read {path}: not UTF-8 text (byte 0x{byte:02x} at {exc.start}); save as UTF-8"
        ) from None
    except pl.exceptions.PolarsError as exc:
        if "utf-8" in str(exc).lower():
            raise ImportFileError(f"cannot read {path}: not UTF-8 text; save as UTF-8") from None
        said = " ".join(str(exc).split())[:200]
        raise ImportFileError(f"{path} is not a CSV or Parquet table ({said})") from None


def map_columns(
    frame: pl.DataFrame, fields: Fields, mapping: Mapping[str, str] | None = None
) -> pl.DataFrame:
    """Return the frame with only the known fields, renamed; explicit ``mapping`` wins.

    ``mapping`` is field -> column as the file spells it. Columns found by name need no
    mapping (``E-Mail`` and ``email_address`` both mean ``email``).
    """
    mapping = dict(mapping or {})
    unknown = sorted(set(mapping) - set(fields.aliases))
    if unknown:
        known = ", ".join(fields.aliases)
        raise ImportFileError(
            f"unknown field {excerpt(unknown[0])} in the mapping (known: {known})"
        )
    by_key = {header_key(c): c for c in frame.columns}
    chosen: dict[str, str] = {}
    for name, aliases in fields.aliases.items():
        if name in mapping:
            if mapping[name] not in frame.columns:
                raise ImportFileError(
                    f"the mapping names column {excerpt(mapping[name])}, not in the file"
                )
            chosen[name] = mapping[name]
            continue
        for alias in (name, *aliases):
            if alias in by_key:
                chosen[name] = by_key[alias]
                break
    missing = [f for f in fields.required if f not in chosen]
    if missing:
        raise ImportFileError(
            f"no column for {missing[0]!r} (columns: {_listed(frame.columns)}); "
            f"name one with --map {missing[0]}=COLUMN"
        )
    if not chosen:
        raise ImportFileError(f"no known column in the file (columns: {_listed(frame.columns)})")
    return frame.select(pl.col(column).alias(name) for name, column in chosen.items())


def parse_mapping(pairs: Iterable[str]) -> dict[str, str]:
    """Return ``field=column`` pairs (from ``--map``) as a dict."""
    out = {}
    for pair in pairs:
        name, sep, column = pair.partition("=")
        if not sep or not name.strip() or not column:
            raise ImportFileError(f"--map {excerpt(pair)}: expected FIELD=COLUMN")
        out[name.strip()] = column
    return out


def row_digest(source: str, row: Mapping[str, Any]) -> str:
    """Return the digest that names a row's hit: the same values give the same digest."""
    values = {k: v for k, v in sorted(row.items()) if v not in (None, "")}
    text = json.dumps([source, values], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def parse_time(value: str | None, now_ms: int, name: str = "time") -> int:
    """Return ms since the epoch of an ISO time or epoch seconds/ms (``now_ms`` if empty)."""
    if value is None or not value.strip():
        return now_ms
    try:
        return parse_event_time(value)
    except EventTimeError as exc:
        raise RowError(f"{name}: {excerpt(value)} {exc}") from None


def excerpt(value: object, limit: int = 40) -> str:
    """Return ``repr(value)`` of a cell, cut to its first ``limit`` characters (then …)."""
    if isinstance(value, str) and len(value) > limit:
        return repr(value[:limit]) + "…"
    return repr(value)


def _listed(columns: list[str]) -> str:
    """Return a file's column names for a message: as they read, or an excerpt if odd."""
    text = ", ".join(columns)
    return text if len(text) <= 120 and text.isprintable() else excerpt(text, 120)


def to_hits(
    source: str,
    frame: pl.DataFrame,
    make_hit: Callable[[dict[str, Any], str], Hit],
    report: ImportReport,
) -> list[tuple[str, Hit]]:
    """Return ``(digest, hit)`` of every good row; bad rows go to ``report.bad``."""
    out = []
    for i, row in enumerate(frame.iter_rows(named=True)):
        report.rows += 1
        clean = {k: (v.strip() if isinstance(v, str) else v) for k, v in row.items()}
        digest = row_digest(source, clean)
        try:
            out.append((digest, storable(make_hit(clean, digest))))
        except RowError as exc:
            report.bad.append(BadRow(i + 2, str(exc)))
    return out


def storable(hit: Hit) -> Hit:
    """Return the hit if the worker can store it; else RowError (a collector's defect)."""
    if not hit.storable():
        raise RowError("the event log cannot hold this row (ids or times out of range)")
    return hit


def enqueue_new(
    r: redis.Redis,
    source: str,
    hits: list[tuple[str, Hit]],
    report: ImportReport,
    progress: Callable[[int], None] | None = None,
    include_erased: bool = False,
    partitions: int = 1,
) -> list[tuple[str, Hit]]:
    """Put the hits not imported before on the stream (on ``partitions`` partitions,
    each hit on its first identifier's); return those that were new.

    A row naming an email (or other identifier) of a person erased before is skipped
    and counted in ``report.erased``; with ``include_erased`` it is taken, and the
    identifier counts as erased no more. Each chunk's hits and their digests land in
    one MULTI: a crash leaves a chunk either wholly imported (and remembered) or not at
    all.
    """
    seen_key = keyspace.imported_rows(source)
    fresh: list[tuple[str, Hit]] = []
    for start in range(0, len(hits), CHUNK):
        chunk = hits[start : start + CHUNK]
        unique = list(dict(chunk).items())  # a row repeated within the file counts once
        known = r.smismember(seen_key, [d for d, _ in unique])
        new = [(d, h) for (d, h), was in zip(unique, known, strict=True) if not was]
        report.already += len(chunk) - len(new)
        new = _not_erased(r, new, report, include_erased)
        if new:
            remember = ("SADD", seen_key, *(d for d, _ in new))
            stream.enqueue(
                r, (h for _, h in new), {}, atomic=True, also=[remember], partitions=partitions
            )
            fresh += new
        report.new += len(new)
        if progress is not None:
            progress(len(chunk))
    return fresh


def _not_erased(
    r: redis.Redis, new: list[tuple[str, Hit]], report: ImportReport, include_erased: bool
) -> list[tuple[str, Hit]]:
    """Return the rows whose identifiers were never erased (or all, lifting the marks)."""
    idents = [identifiers_of(h) for _, h in new]
    flat = [i for found in idents for i in found]
    marked = dict(zip(flat, erasure.erased_before(r, flat), strict=True))
    if not any(marked.values()):
        return new
    if include_erased:
        erasure.forgive(r, [i for i, was in marked.items() if was])
        return new
    kept = [
        row for row, found in zip(new, idents, strict=True) if not any(marked[i] for i in found)
    ]
    report.erased += len(new) - len(kept)
    return kept
