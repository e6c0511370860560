"""A person's key: their id's 16 hex digits read as one unsigned 64-bit number.

dmp mints every person id as 16 lower-case hex digits (``dmp.people.identity``), so the
id is a 64-bit number written out. Grouping and joining millions of touchpoints by that
number instead of the 16-character text saves hashing and comparing the text out of
line: the matrix build's fold and the segments' ``did`` counts key by it (at 1M persons
and 20M touchpoints, a tenth of either; BENCHMARKS.md, "Person keys").

An id of another shape (a test's ``"p1"``, a frame from elsewhere) has no key. A frame
can be keyed only if every id in it has one (:func:`all_keyed`); then the ids and the
keys are one to one, and a touchpoint whose id has no key belongs to none of its
persons. The check is strict for the persons; for the touchpoints, read by the million,
only the length is checked and the digits parsed, so an id that spells a person's
digits in upper case would count as theirs: dmp writes no such id.
"""

from __future__ import annotations

import polars as pl

KEY = "person_key"
ID_DIGITS = 16  # hex digits of a person id, as dmp.people.identity mints them
_CANONICAL = f"^[0-9a-f]{{{ID_DIGITS}}}$"


def person_key(ids: pl.Expr) -> pl.Expr:
    """Return each id's key (UInt64), null for an id that is not 16 hex digits."""
    digits = ids.str.to_integer(base=16, dtype=pl.UInt64, strict=False)
    return pl.when(ids.str.len_bytes() == ID_DIGITS).then(digits)


def person_id_of(key: int) -> str:
    """Return the person id whose key ``key`` is (:func:`person_key`'s inverse)."""
    return f"{key:0{ID_DIGITS}x}"


def all_keyed(frame: pl.LazyFrame, column: str = "person_id") -> bool:
    """Return whether every id in ``frame``'s ``column`` is dmp's: 16 lower-case hex
    digits (then :func:`person_key` is one to one over them). Collects that column."""
    ids = pl.col(column)
    found = frame.select((ids.is_null() | ~ids.str.contains(_CANONICAL)).any()).collect()
    return not found.item()
