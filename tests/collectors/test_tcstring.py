"""TC strings decoded server-side: IAB's own encoder's strings read back field by field;
malformed, truncated and hostile strings refused with BadTCString, cheaply."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.tcfpurposes import PurposeMap
from collectors.tcstring import (
    MAX_LENGTH,
    BadTCString,
    TCString,
    VendorIds,
    consent_of,
    decode,
    proof_of,
)

VECTORS = json.loads((Path(__file__).parent / "tcf" / "vectors.json").read_text())["vectors"]
BY_NAME = {v["name"]: v for v in VECTORS}
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
FAST = settings(max_examples=400, deadline=None, database=None)
NOTHING = {"ads": False, "analytics": False, "email": False}


def _encode(bits: str) -> str:
    """Return the base64url text of a bit string (zero-padded to whole characters)."""
    bits += "0" * (-len(bits) % 6)
    return "".join(ALPHABET[int(bits[i : i + 6], 2)] for i in range(0, len(bits), 6))


def _int(value: int, width: int) -> str:
    return format(value, f"0{width}b")


# A valid core segment up to PublisherCC (213 bits), for hand-made vendor sections.
HEAD = (
    _int(2, 6) + _int(17_000_000_000, 36) * 2 + _int(300, 12) + _int(2, 12) + _int(1, 6)
    + _int(4, 6) + _int(13, 6) + _int(126, 12) + _int(4, 6) + "00" + "0" * 12
    + "1011" + "0" * 20 + "0" * 24 + "0" + _int(3, 6) + _int(4, 6)
)  # fmt: skip
EMPTY_VENDORS = _int(0, 16) + "0"
NO_RESTRICTIONS = _int(0, 12)


def _fields(tc: TCString) -> dict:
    """Return a decoded string's fields in the vectors' JSON shape."""
    out = {
        name: getattr(tc, name)
        for name in TCString.__slots__
        if name not in ("restrictions", "publisher")
    }
    for name in ("created", "last_updated"):
        out[name] = out[name].isoformat()
    for name in ("special_features", "purpose_consents", "purpose_li"):
        out[name] = sorted(out[name])
    for name in ("vendor_consents", "vendor_li"):
        out[name] = list(out[name])
    out["restrictions"] = sorted(
        [r.purpose_id, r.restriction_type, list(r.vendors)] for r in tc.restrictions
    )
    out["publisher"] = tc.publisher and {
        name: sorted(getattr(tc.publisher, name)) for name in tc.publisher.__slots__
    }
    return out


def _expected(vector: dict) -> dict:
    expected = dict(vector["expected"])
    for name in ("created", "last_updated"):
        expected[name] = datetime.fromisoformat(expected[name]).isoformat()
    return expected


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vectors_of_iabtcf_core_decode_field_by_field(vector):
    """Every string @iabtcf/core encoded decodes to the fields it decodes itself."""
    assert _fields(decode(vector["string"])) == _expected(vector)


def test_the_vectors_cover_both_vendor_encodings_and_every_segment():
    """The vectors hold bitfield and range vendor sections, restrictions, a publisher TC
    segment and large vendor ids (else the test above would prove less than it says)."""
    ranged = [v for v in VECTORS if "(range)" in v["name"]]
    assert ranged and all(decode(v["string"]).vendor_consents for v in ranged)
    assert any(65535 in v["expected"]["vendor_consents"] for v in VECTORS)
    assert any(v["expected"]["restrictions"] for v in VECTORS)
    assert any(
        v["expected"]["publisher"] and v["expected"]["publisher"]["custom_li"] for v in VECTORS
    )
    assert any(v["expected"]["is_service_specific"] for v in VECTORS)
    assert {s[0] for v in VECTORS for s in v["string"].split(".")[1:]} >= {"P", "Y", "Q"}
    assert (
        decode(BY_NAME["other CMP, dates with time, purpose one treatment"]["string"]).cmp_id
        == 4095
    )


def test_vendor_ids_are_a_set():
    """VendorIds answers membership, length and iteration like a set of ids."""
    ids = VendorIds.of([1, 7, 65535])
    assert list(ids) == [1, 7, 65535] and len(ids) == 3
    assert 7 in ids and 2 not in ids and 0 not in ids and -1 not in ids and "7" not in ids
    assert list(VendorIds()) == [] and len(VendorIds()) == 0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("CQhD nIAQ", "base64url"),
        ("CQhDnIAQhDnIAEsACBENB-EAAAAAAAAAAAYgAAAAAAAA=", "base64url"),
        ("CQhDnIAQhDnIAEsACBENB+EAAAAAAAAAAAYgAAAAAAAA", "base64url"),
        ("CQhDnIAQhDnIAEsACBENB-EAAAAAAAAAAAYgAAAAAAAA..YAAA", "base64url"),
        ("CQhDnIAQhDnIAEsACBENB-EAAAAAAAAAAAYgAAAAAAAA.", "base64url"),
        (".CQhDnIAQhDnIAEsACBENB-EAAAAAAAAAAAYgAAAAAAAA", "base64url"),
        ("BOEFEAyOEFEAyAHABDENAI4AAAB9vABAASA", "version 1"),  # a TCF v1.1 string
        ("YAAAAAAAAAAA", "version 24"),  # a publisher TC segment alone
        ("${GDPR_CONSENT_755}", "base64url"),
        ("%7BGDPR_CONSENT_755%7D", "base64url"),
        ("CQhDnIAQhDnIAEsACBENB-EAAAAAAAAAAAYgAAAAAAAAé", "base64url"),
        ("A" * (MAX_LENGTH + 1), f"longer than {MAX_LENGTH}"),
        ("CQhDnIAQ", "truncated"),
        (_encode(HEAD[:-12] + _int(26, 6) + _int(4, 6) + EMPTY_VENDORS * 2), "two letters"),
    ],
)
def test_malformed_strings_are_refused_with_a_reason(text, reason):
    """Bad characters, empty segments, other versions, oversize and short strings raise
    BadTCString naming why."""
    with pytest.raises(BadTCString, match=reason):
        decode(text)


@pytest.mark.parametrize("value", [None, 42, b"CQhD", ["CQhD"]])
def test_a_tc_string_must_be_text(value):
    """Anything but a str is refused as such, not with a TypeError."""
    with pytest.raises(BadTCString, match="text"):
        decode(value)


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_every_truncation_is_refused_or_reads_the_same(vector):
    """Each prefix of a valid string raises BadTCString or decodes to the same core fields
    (only whole padding or a whole later segment can go unnoticed)."""
    full = _fields(decode(vector["string"]))
    for end in range(len(vector["string"])):
        try:
            short = _fields(decode(vector["string"][:end]))
        except BadTCString:
            continue
        assert {**short, "publisher": None} == {**full, "publisher": None}
        assert short["publisher"] in (None, full["publisher"])


def test_the_hand_made_core_is_valid():
    """The hand-made core of the hostile tests below decodes (so they test what they say)."""
    tc = decode(_encode(HEAD + EMPTY_VENDORS * 2 + NO_RESTRICTIONS))
    assert tc.cmp_id == 300 and tc.purpose_consents == {1, 3, 4} and tc.publisher_cc == "DE"


def test_a_claimed_vendor_bitfield_longer_than_the_string_is_refused():
    """MaxVendorId 65535 as a bitfield with a few bits left: refused before any slicing."""
    text = _encode(HEAD + _int(65535, 16) + "0" + "1" * 40)
    with pytest.raises(BadTCString, match="claims 65535 vendors"):
        decode(text)


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        ([(0, 0)], "0-0"),
        ([(5, 4)], "5-4"),
        ([(1, 11)], "1-11"),  # beyond MaxVendorId
    ],
)
def test_bad_range_entries_are_refused(entries, reason):
    """A range of id 0, one ending before it starts or past MaxVendorId is refused."""
    section = _int(10, 16) + "1" + _int(len(entries), 12)
    section += "".join("1" + _int(a, 16) + _int(b, 16) for a, b in entries)
    with pytest.raises(BadTCString, match=reason):
        decode(_encode(HEAD + section + EMPTY_VENDORS + NO_RESTRICTIONS))


def test_ranges_claiming_every_vendor_cost_one_small_bitmask():
    """As many range entries as fit, each claiming vendors 1 to 65535: the string decodes
    to the 65535 vendors, held in one 8 KB integer (no set of 65535 numbers per entry)."""
    count = (MAX_LENGTH * 6 - len(HEAD) - 17 - 29 - 12) // 33
    section = (
        _int(65535, 16) + "1" + _int(count, 12) + ("1" + _int(1, 16) + _int(65535, 16)) * count
    )
    text = _encode(HEAD + section + EMPTY_VENDORS + NO_RESTRICTIONS)
    assert len(text) <= MAX_LENGTH and count > 1000
    tc = decode(text)
    assert len(tc.vendor_consents) == 65535 and 65535 in tc.vendor_consents
    assert sys.getsizeof(tc.vendor_consents.mask) < 9000


def test_restrictions_claiming_more_entries_than_bits_are_refused():
    """4095 restrictions of 4095 entries each are refused once the bits run out."""
    restriction = _int(1, 6) + "00" + _int(4095, 12) + "0" + _int(7, 16)
    text = _encode(HEAD + EMPTY_VENDORS * 2 + _int(4095, 12) + restriction * 3)
    with pytest.raises(BadTCString, match="truncated"):
        decode(text)


def test_a_megabyte_string_is_refused_at_once():
    """A 1 MB string is refused by its length, whatever it holds."""
    with pytest.raises(BadTCString, match="longer than"):
        decode(VECTORS[0]["string"] + "A" * 1_000_000)


def test_unknown_and_vendor_segments_are_skipped():
    """Segment types dmp does not read (1, 2 and the unassigned 4 to 7) are ignored."""
    core = BY_NAME["ads and analytics, few vendors (bitfield)"]["string"].split(".")[0]
    odd = core + "." + _encode("111" + "1" * 21) + "." + _encode("010" + "0" * 21)
    assert _fields(decode(odd)) == _fields(decode(core))


def _outcome(text: str) -> TCString | str:
    """Return the decoded string, or the reason BadTCString gave; any other exception
    propagates and fails the test."""
    try:
        return decode(text)
    except BadTCString as exc:
        return str(exc)


@FAST
@given(st.text(max_size=300))
def test_any_text_decodes_or_raises_bad_tc_string(text):
    """Random text never raises anything but BadTCString, which always says why."""
    found = _outcome(text)
    assert isinstance(found, TCString) or found


@FAST
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=4))
def test_any_version_2_bits_decode_or_raise_bad_tc_string(segments):
    """Random bits behind a version 2 header (so that decoding goes deep) never raise
    anything but BadTCString."""
    bits = ["".join(format(byte, "08b") for byte in seg) for seg in segments]
    text = ".".join(_encode(b) for b in [_int(2, 6) + bits[0], *bits[1:]] if b)
    found = _outcome(text)
    assert found.version == 2 if isinstance(found, TCString) else found


@FAST
@given(st.data())
def test_mutated_vectors_decode_or_raise_bad_tc_string(data):
    """A vector with characters replaced never raises anything but BadTCString."""
    text = list(data.draw(st.sampled_from(VECTORS))["string"])
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text) - 1))
        text[at] = data.draw(st.sampled_from(ALPHABET + "."))
    found = _outcome("".join(text))
    assert found.version == 2 if isinstance(found, TCString) else found


def _default_rules(purposes: set[int]) -> dict[str, bool]:
    return {
        "ads": {1, 3, 4} <= purposes,
        "analytics": 1 in purposes and bool({7, 9} & purposes),
        "email": False,
    }


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_consent_of_vectors_follows_the_default_rules(vector):
    """ads needs purposes 1, 3 and 4; analytics 1 and 7 or 9; email never comes from TCF;
    the proof is the CMP id and the string's hash."""
    got = consent_of(vector["string"], PurposeMap.of())
    assert got.consent == _default_rules(set(vector["expected"]["purpose_consents"]))
    assert got.cmp_id == vector["expected"]["cmp_id"]
    assert got.version == proof_of(vector["string"])
    cmp_id, digest = got.version.removeprefix("tcf:").split(":")
    assert int(cmp_id) == got.cmp_id and len(digest) == 32 and vector["string"] not in got.version


def test_a_cached_answer_is_never_shared_with_the_next_caller():
    """consent_of is cached per string: a caller changing its consent (browser signals
    withhold ads) must not change what the next hit with the same string gets."""
    tc = BY_NAME["accept all"]["string"]
    first = consent_of(tc, PurposeMap.of())
    first.consent["ads"] = False
    assert consent_of(tc, PurposeMap.of()).consent["ads"] is True


def test_the_defaults_grant_each_category_on_the_right_purposes():
    """The vectors chosen for it grant ads and analytics, analytics alone, or nothing."""
    granted = {
        name: consent_of(BY_NAME[name]["string"], PurposeMap.of()).consent
        for name in (
            "ads and analytics, few vendors (bitfield)",
            "analytics only through purpose 9",
            "ads without purpose 1",
            "legitimate interest only",
        )
    }
    assert list(granted.values()) == [
        {"ads": True, "analytics": True, "email": False},
        {"ads": False, "analytics": True, "email": False},
        NOTHING,
        NOTHING,  # legitimate interest is no consent
    ]


@pytest.mark.parametrize(("vendor_id", "ads"), [(0, True), (3, True), (17, True), (4, False)])
def test_a_configured_vendor_needs_its_own_consent(vendor_id, ads):
    """With DMP_TCF_VENDOR_ID set, the purposes grant only if that vendor has consent."""
    text = BY_NAME["ads and analytics, few vendors (bitfield)"]["string"]  # vendors 1,2,3,17,40
    got = consent_of(text, PurposeMap.of(vendor_id=vendor_id))
    assert got.consent == {"ads": ads, "analytics": ads, "email": False}


def test_a_vendor_in_a_range_section_has_consent():
    """The vendor rule reads range-encoded sections too (ids up to 65535)."""
    text = BY_NAME["large sparse vendor ids (range)"]["string"]
    assert consent_of(text, PurposeMap.of("1", "1", vendor_id=65535)).consent["ads"] is True
    assert consent_of(text, PurposeMap.of("1", "1", vendor_id=65534)).consent["ads"] is False


@pytest.mark.parametrize("text", ["garbage!", "CQhDnIAQ", "A" * 20_000, "${GDPR_CONSENT_755}"])
def test_an_undecodable_string_grants_nothing_and_says_so(text):
    """An undecodable string: every category refused, CMP id 0, proof tcf:invalid:<hash>."""
    got = consent_of(text, PurposeMap.of())
    assert got.consent == NOTHING and got.cmp_id == 0
    assert got.version.startswith("tcf:invalid:") and len(got.version) == len("tcf:invalid:") + 32


@pytest.mark.parametrize("text", ["", None])
def test_no_string_grants_nothing(text):
    """No TC string where GDPR applies: every category refused, proof tcf:none."""
    got = consent_of(text, PurposeMap.of())
    assert (got.consent, got.version, got.cmp_id) == (NOTHING, "tcf:none", 0)


def test_the_proof_tells_strings_apart_and_survives_odd_text():
    """Two strings have two proofs; a lone surrogate (from JSON) is hashed, not an error."""
    a, b = VECTORS[0]["string"], VECTORS[1]["string"]
    assert proof_of(a) != proof_of(b) and proof_of(a) == proof_of(a)
    assert proof_of("\ud800").startswith("tcf:invalid:")
