"""A person's key: their id's 16 hex digits read as one unsigned 64-bit number.

dmp mints every person id as 16 lower-case hex digits (``dmp.people.identity``), so the
id is a 64-bit number written out. Grouping and joining millions of touchpoints by that
number instead of the 16-character text saves hashing and comparing the text out of
line: the matrix build's fold and the segments' ``did`` counts key by it (at 1M persons
and 20M touchpoints, a tenth of either; BENCHMARKS.md, "Person keys").

An id of another shape (a test's ``"p1"``, a frame from elsewhere) has no key. A frame
can be keyed only if every id in it is dmp's (:func:`all_keyed`); then the ids and the
keys are one to one, and a touchpoint whose id has no key belongs to none of its
persons. The check is strict for the persons (and for the few ids an erasure or a run's
recount names: :func:`strict_person_key`); the touchpoints, read by the million, are
keyed by :func:`person_key`, which checks only the length and reads the digits (upper
case and a leading ``+`` too): an id spelling a person's number so would count as
theirs, and dmp writes no such id.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

from dmp.records import PERSON_ID_PATTERN

KEY = "person_key"
ID_DIGITS = 16  # characters of a person id (PERSON_ID_PATTERN)
_CANONICAL = f"^{PERSON_ID_PATTERN}$"


def person_key(ids: pl.Expr) -> pl.Expr:
    """Return each id's key (UInt64): its 16 characters read as a base-16 number; null
    for an id of another length or that does not read so. Quick, and lenient: upper-case
    digits and a leading ``+`` read too (see :func:`strict_person_key`)."""
    digits = ids.str.to_integer(base=16, dtype=pl.UInt64, strict=False)
    return pl.when(ids.str.len_bytes() == ID_DIGITS).then(digits)


def strict_person_key(ids: pl.Expr) -> pl.Expr:
    """Return each id's key if it is dmp's (16 lower-case hex digits), else null."""
    return pl.when(ids.str.contains(_CANONICAL)).then(person_key(ids))


def keys_of(ids: Iterable[str]) -> pl.Series:
    """Return the strict keys of a few ids (:func:`strict_person_key`; null for another's)."""
    return pl.select(strict_person_key(pl.lit(pl.Series(list(ids), dtype=pl.Utf8)))).to_series()


def person_id_of(key: int) -> str:
    """Return the person id whose key ``key`` is (:func:`strict_person_key`'s inverse)."""
    return f"{key:0{ID_DIGITS}x}"


def all_keyed(frame: pl.LazyFrame, column: str = "person_id") -> bool:
    """Return whether every id in ``frame``'s ``column`` is dmp's: 16 lower-case hex
    digits (then :func:`person_key` is one to one over them). Collects that column."""
    ids = pl.col(column)
    found = frame.select((ids.is_null() | ~ids.str.contains(_CANONICAL)).any()).collect()
    return not found.item()


def id_order(keyed: bool, column: str = "person_id") -> pl.Expr:
    """Return what sorts a frame by its ids: their keys if ``keyed`` (every id is dmp's,
    :func:`all_keyed`: the same order as the texts', compared as numbers), else the texts."""
    return person_key(pl.col(column)) if keyed else pl.col(column)


def in_id_order(frame: pl.DataFrame, column: str = "person_id") -> pl.DataFrame:
    """Return ``frame`` sorted by its ids: by their keys if all are dmp's (16 lower-case
    hex digits sort as the numbers they spell: the same order, at half the cost of
    comparing the texts), else by the texts."""
    return frame.sort(id_order(all_keyed(frame.lazy(), column), column))
