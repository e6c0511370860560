"""Person keys: dmp's ids as numbers, and only ids of that shape."""

from __future__ import annotations

import polars as pl

from segments.personkey import (
    all_keyed,
    in_id_order,
    person_id_of,
    person_key,
    strict_person_key,
)


def keys(ids: list[str | None], key=person_key) -> list[int | None]:
    return pl.select(key(pl.lit(pl.Series(ids, dtype=pl.Utf8)))).to_series().to_list()


def test_a_dmp_id_is_keyed_by_its_number():
    assert keys(["0000000000000000", "000000000000000a", "ffffffffffffffff"]) == [0, 10, 2**64 - 1]


def test_ids_of_other_shapes_have_no_key():
    assert (
        keys(["p1", "0" * 15, "0" * 17, "0x00000000000001", "000000000000000g", "", None])
        == [None] * 7
    )


def test_the_quick_key_reads_other_spellings_of_a_number_and_the_strict_one_does_not():
    """The touchpoints' key reads capitals and a sign (dmp writes neither: see the module);
    the strict key, for the few ids an erasure or a recount names, only dmp's ids."""
    spellings = ["00000000000000ab", "00000000000000AB", "+0000000000000ab"]
    assert keys(spellings) == [0xAB] * 3
    assert keys(spellings, strict_person_key) == [0xAB, None, None]
    assert person_id_of(0xAB) == spellings[0]


def test_a_frame_is_keyed_only_if_every_id_is_sixteen_small_hex_digits():
    def keyed(ids: list[str | None]) -> bool:
        return all_keyed(pl.LazyFrame({"person_id": ids}, schema={"person_id": pl.Utf8}))

    assert keyed(["0123456789abcdef", "fedcba9876543210"])
    assert keyed([])  # nothing to key: nothing against it
    assert not keyed(["0123456789abcdef", "p1"])
    assert not keyed(["0123456789ABCDEF"])  # the same number as the small letters' id
    assert not keyed(["+123456789abcdef"])  # parses, but is not an id dmp mints
    assert not keyed(["0123456789abcdef", None])


def test_frames_are_put_in_the_order_of_their_ids_texts_whichever_way_they_are_sorted():
    """dmp's ids sort by their keys, in the order of their texts; other ids by the texts."""
    dmp_ids = ["f000000000000000", "00000000000000ff", "0000000000000a00", "0000000000000000"]
    for ids in (dmp_ids, [*dmp_ids, "p1"], ["b", "a10", "a9"]):
        frame = pl.DataFrame({"person_id": ids, "n": range(len(ids))})
        assert in_id_order(frame)["person_id"].to_list() == sorted(ids)
