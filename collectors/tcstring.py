"""IAB TCF v2.2 TC strings: decoded server-side, and the consent and proof they give.

A TC string is base64url segments joined by ``.``: the core segment first (its first six
bits are the version, 2), then optional segments that each begin with a 3-bit type
(1 disclosed vendors, 2 allowed vendors, 3 publisher TC). dmp reads the core segment and
the publisher TC segment; it skips the vendor-disclosure segments, which decide nothing
for dmp. The layout is IAB's "TCF v2.2 TC string" format, as ``@iabtcf/core`` encodes it.

A pixel hit is hot and a visitor's pages repeat one string, so decoding is cached per
string; a hostile string costs at most :data:`MAX_LENGTH` characters of work, and a vendor
set is one integer bitmask (at most 8 KB) however many vendors a range claims.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from collectors.tcfpurposes import PurposeMap

MAX_LENGTH = 8192  # characters: real strings are a few hundred, ~2000 with OOB segments
VERSION = 2
NO_STRING = "tcf:none"  # the proof when GDPR applies and no TC string came
PUBLISHER_TC = 3  # segment type of the publisher's own purposes
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_TO_BITS = str.maketrans({c: format(i, "06b") for i, c in enumerate(_ALPHABET)})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class BadTCString(ValueError):
    """A TC string that cannot be decoded; the message says why. It grants nothing."""


@dataclass(frozen=True, slots=True)
class VendorIds:
    """A set of TCF vendor ids (1 to 65535), kept as one bitmask: bit n is vendor n."""

    mask: int = 0

    @classmethod
    def of(cls, ids: Iterable[int]) -> VendorIds:
        """Return the set of the vendor ids ``ids``."""
        mask = 0
        for vendor_id in ids:
            mask |= 1 << vendor_id
        return cls(mask)

    def __contains__(self, vendor_id: object) -> bool:
        return isinstance(vendor_id, int) and vendor_id > 0 and bool(self.mask >> vendor_id & 1)

    def __iter__(self) -> Iterator[int]:
        bits = format(self.mask, "b")[::-1]
        at = bits.find("1")
        while at >= 0:
            yield at
            at = bits.find("1", at + 1)

    def __len__(self) -> int:
        return self.mask.bit_count()

    def __repr__(self) -> str:
        return f"VendorIds({list(self)})" if len(self) <= 20 else f"VendorIds({len(self)} ids)"


@dataclass(frozen=True, slots=True)
class Restriction:
    """A publisher restriction: for ``purpose_id``, ``vendors`` may use the purpose only as
    ``restriction_type`` says (0 not at all, 1 with consent, 2 on legitimate interest)."""

    purpose_id: int
    restriction_type: int
    vendors: VendorIds


@dataclass(frozen=True, slots=True)
class PublisherTC:
    """The publisher TC segment: the publisher's own purposes and custom purposes."""

    purpose_consents: frozenset[int]
    purpose_li: frozenset[int]
    custom_consents: frozenset[int]
    custom_li: frozenset[int]


@dataclass(frozen=True, slots=True)
class TCString:
    """A decoded TC string (purposes and special features numbered from 1)."""

    version: int
    created: datetime
    last_updated: datetime
    cmp_id: int
    cmp_version: int
    consent_screen: int
    consent_language: str
    vendor_list_version: int
    policy_version: int
    is_service_specific: bool
    use_non_standard_texts: bool
    special_features: frozenset[int]
    purpose_consents: frozenset[int]
    purpose_li: frozenset[int]
    purpose_one_treatment: bool
    publisher_cc: str
    vendor_consents: VendorIds
    vendor_li: VendorIds
    restrictions: tuple[Restriction, ...]
    publisher: PublisherTC | None = None


@dataclass(frozen=True, slots=True)
class TCFConsent:
    """What a TC string grants: dmp's categories, the proof to store, and the CMP's id."""

    consent: dict[str, bool]
    version: str  # the proof (see proof_of)
    cmp_id: int  # 0 when the string was undecodable


class _Bits:
    """A reader of a segment's bits, refusing to read past their end."""

    __slots__ = ("bits", "at")

    def __init__(self, segment: str) -> None:
        self.bits = segment.translate(_TO_BITS)
        self.at = 0

    def take(self, count: int, field: str) -> str:
        end = self.at + count
        if end > len(self.bits):
            raise BadTCString(f"truncated: {field} needs {count} bits at bit {self.at}")
        taken = self.bits[self.at : end]
        self.at = end
        return taken

    def int(self, count: int, field: str) -> int:
        return int(self.take(count, field), 2)

    def flag(self, field: str) -> bool:
        return self.take(1, field) == "1"

    def numbers(self, count: int, field: str) -> frozenset[int]:
        """Read a bitfield whose first bit is number 1."""
        field_bits = self.take(count, field)
        return frozenset(i for i, bit in enumerate(field_bits, 1) if bit == "1")

    def letters(self, field: str) -> str:
        first, second = self.int(6, field), self.int(6, field)
        if first > 25 or second > 25:
            raise BadTCString(f"{field} is not two letters A to Z")
        return chr(65 + first) + chr(65 + second)

    def ranges(self, field: str, max_id: int = 0xFFFF) -> VendorIds:
        """Read NumEntries and its entries of single ids or ranges, each within 1..max_id."""
        mask = 0
        is_a_range, start_id, end_id = (
            f"{field} {name}" for name in ("IsARange", "StartOrOnlyVendorId", "EndVendorId")
        )
        for _ in range(self.int(12, f"{field} NumEntries")):
            is_range = self.flag(is_a_range)
            start = self.int(16, start_id)
            end = self.int(16, end_id) if is_range else start
            if start < 1 or end < start or end > max_id:
                raise BadTCString(
                    f"{field}: vendor range {start}-{end} is not within 1-{max_id} in order"
                )
            # One shift per entry: a range of 65535 vendors costs no more than one of 2.
            mask |= ((1 << (end - start + 1)) - 1) << start
        return VendorIds(mask)

    def vendors(self, field: str) -> VendorIds:
        """Read a vendor section: MaxVendorId, then a bitfield or range entries."""
        max_id = self.int(16, f"{field} MaxVendorId")
        if not self.flag(f"{field} IsRangeEncoding"):
            if self.at + max_id > len(self.bits):  # checked before slicing a claimed size
                raise BadTCString(
                    f"truncated: {field} claims {max_id} vendors, {len(self.bits) - self.at}"
                    " bits are left"
                )
            field_bits = self.take(max_id, field)
            return VendorIds(int(field_bits[::-1] or "0", 2) << 1)
        return self.ranges(field, max_id)


def decode(tc_string: str) -> TCString:
    """Return the decoded TC string, or raise BadTCString saying why it is undecodable."""
    if not isinstance(tc_string, str):
        raise BadTCString("a TC string is text")
    if not tc_string:
        raise BadTCString("empty")
    if len(tc_string) > MAX_LENGTH:
        raise BadTCString(f"longer than {MAX_LENGTH} characters")
    decoded = _decoded(tc_string)
    if isinstance(decoded, str):
        raise BadTCString(decoded)  # a fresh exception: a cached one would grow tracebacks
    return decoded


@lru_cache(maxsize=512)
def _decoded(tc_string: str) -> TCString | str:
    """Return the decoded string, or why it is undecodable (cached either way)."""
    try:
        return _decode(tc_string)
    except BadTCString as exc:
        return str(exc)


def _decode(tc_string: str) -> TCString:
    segments = tc_string.split(".")
    for segment in segments:
        if not _BASE64URL.fullmatch(segment):
            raise BadTCString("segments must be non-empty base64url (A-Z a-z 0-9 - _)")
    core = _core(_Bits(segments[0]))
    for segment in segments[1:]:
        bits = _Bits(segment)
        if bits.int(3, "SegmentType") == PUBLISHER_TC:
            return _with_publisher(core, bits)
    return core


def _core(bits: _Bits) -> TCString:
    version = bits.int(6, "Version")
    if version != VERSION:
        raise BadTCString(f"version {version}: only TCF v2 strings (version 2) are read")
    return TCString(
        version=version,
        created=_EPOCH + timedelta(milliseconds=100 * bits.int(36, "Created")),
        last_updated=_EPOCH + timedelta(milliseconds=100 * bits.int(36, "LastUpdated")),
        cmp_id=bits.int(12, "CmpId"),
        cmp_version=bits.int(12, "CmpVersion"),
        consent_screen=bits.int(6, "ConsentScreen"),
        consent_language=bits.letters("ConsentLanguage"),
        vendor_list_version=bits.int(12, "VendorListVersion"),
        policy_version=bits.int(6, "TcfPolicyVersion"),
        is_service_specific=bits.flag("IsServiceSpecific"),
        use_non_standard_texts=bits.flag("UseNonStandardTexts"),
        special_features=bits.numbers(12, "SpecialFeatureOptIns"),
        purpose_consents=bits.numbers(24, "PurposesConsent"),
        purpose_li=bits.numbers(24, "PurposesLITransparency"),
        purpose_one_treatment=bits.flag("PurposeOneTreatment"),
        publisher_cc=bits.letters("PublisherCC"),
        vendor_consents=bits.vendors("VendorConsents"),
        vendor_li=bits.vendors("VendorLegitimateInterests"),
        restrictions=_restrictions(bits),
    )


def _restrictions(bits: _Bits) -> tuple[Restriction, ...]:
    restrictions = []
    for _ in range(bits.int(12, "NumPubRestrictions")):
        purpose_id = bits.int(6, "PurposeId")
        restriction_type = bits.int(2, "RestrictionType")
        vendors = bits.ranges("PubRestrictionEntry")
        restrictions.append(Restriction(purpose_id, restriction_type, vendors))
    return tuple(restrictions)


def _with_publisher(core: TCString, bits: _Bits) -> TCString:
    consents = bits.numbers(24, "PubPurposesConsent")
    li = bits.numbers(24, "PubPurposesLITransparency")
    custom = bits.int(6, "NumCustomPurposes")
    publisher = PublisherTC(
        consents,
        li,
        bits.numbers(custom, "CustomPurposesConsent"),
        bits.numbers(custom, "CustomPurposesLITransparency"),
    )
    return replace(core, publisher=publisher)


def proof_of(tc_string: str) -> str:
    """Return the consent proof of a TC string: ``tcf:<CMP id>:<hash>``, where the hash is
    the first 32 hex digits of the string's SHA-256 (it proves which string it was without
    keeping it), ``tcf:invalid:<hash>`` for an undecodable one, ``tcf:none`` for ''."""
    if not tc_string:
        return NO_STRING
    digest = hashlib.sha256(tc_string.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    try:
        return f"tcf:{decode(tc_string).cmp_id}:{digest}"
    except BadTCString:
        return f"tcf:invalid:{digest}"


def consent_of(tc_string: str, purposes: PurposeMap) -> TCFConsent:
    """Return what ``tc_string`` grants under the purpose rules ``purposes`` (with the
    configured vendor's consent, if a vendor id is set); an undecodable string grants
    nothing."""
    if not isinstance(tc_string, str):
        tc_string = ""
    found = _consent_of(tc_string, purposes)
    return TCFConsent(dict(found.consent), found.version, found.cmp_id)  # the caller's own dict


@lru_cache(maxsize=512)
def _consent_of(tc_string: str, purposes: PurposeMap) -> TCFConsent:
    # Cached as decode is: a visitor's pages send the same string again and again, and
    # the proof's hash and the rules cost a pixel hit more than the rest of its consent.
    version = proof_of(tc_string)
    try:
        tc = decode(tc_string)
    except BadTCString:
        return TCFConsent(purposes.consent((), vendor_consent=False), version, 0)
    vendor_consent = purposes.vendor_id in tc.vendor_consents
    return TCFConsent(purposes.consent(tc.purpose_consents, vendor_consent), version, tc.cmp_id)
