"""Person keys: dmp's ids as numbers, and only ids of that shape."""

from __future__ import annotations

import polars as pl

from segments.personkey import all_keyed, person_key


def keys(ids: list[str | None]) -> list[int | None]:
    return pl.select(person_key(pl.Series(ids, dtype=pl.Utf8))).to_series().to_list()


def test_a_dmp_id_is_keyed_by_its_number():
    assert keys(["0000000000000000", "000000000000000a", "ffffffffffffffff"]) == [0, 10, 2**64 - 1]


def test_ids_of_other_shapes_have_no_key():
    assert (
        keys(["p1", "0" * 15, "0" * 17, "0x00000000000001", "000000000000000g", "", None])
        == [None] * 7
    )


def test_a_frame_is_keyed_only_if_every_id_is_sixteen_small_hex_digits():
    def keyed(ids: list[str | None]) -> bool:
        return all_keyed(pl.LazyFrame({"person_id": ids}, schema={"person_id": pl.Utf8}))

    assert keyed(["0123456789abcdef", "fedcba9876543210"])
    assert keyed([])  # nothing to key: nothing against it
    assert not keyed(["0123456789abcdef", "p1"])
    assert not keyed(["0123456789ABCDEF"])  # the same number as the small letters' id
    assert not keyed(["+123456789abcdef"])  # parses, but is not an id dmp mints
    assert not keyed(["0123456789abcdef", None])
