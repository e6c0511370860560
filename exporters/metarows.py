"""Meta's multi-key rows: a contact normalised and hashed key by key, as Meta documents
(``exporters.identifiers``), and the ``payload`` JSON of a request.

A row is ``SCHEMA``'s keys in order: EXTERN_ID plain, every other key SHA-256 in lowercase
hex, a blank key '' (never the hash of an empty text). A contact without a consented
email or phone has no row: names and an address alone match nobody, and are not sent
without an identifier the person consented to ads for.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from operator import attrgetter

from dmp.membership.audience import Contact
from exporters.destination import Row
from exporters.identifiers import (
    country_code,
    meta_city,
    meta_email,
    meta_name,
    meta_phone,
    postal_code,
)

SCHEMA = ("EXTERN_ID", "EMAIL", "PHONE", "FN", "LN", "CT", "ZIP", "COUNTRY")
_SCHEMA_LIST = list(SCHEMA)
_dump = json.JSONEncoder(separators=(",", ":")).encode
_SCHEMA_JSON = _dump(_SCHEMA_LIST)
_sha256 = hashlib.sha256
_join_cells = '","'.join


def encode_rows(contacts: Sequence[Contact]) -> list[Row | None]:
    """Return each contact's row (None: no consented email or phone)."""
    emails = [c.email for c in contacts]
    if _only_emails(contacts) and _normal(emails):
        # The common batch: emails dmp keeps normalised and nothing else to hash, one
        # comprehension each (a benchmark holds this path; encode_row is the full one).
        sha = _sha256
        digests = [sha(e.encode()).hexdigest() if e else "" for e in emails]
        return [
            (c.external_id, d, "", "", "", "", "", "") if d else None
            for c, d in zip(contacts, digests, strict=True)
        ]
    return [encode_row(c) for c in contacts]


def encode_row(contact: Contact) -> Row | None:
    """Return a contact's multi-key row, normalised and hashed as Meta documents (None
    without a consented email or phone)."""
    email = _digest(meta_email(contact.email)) if contact.email else ""
    phone = _digest(_first_phone(contact.phones)) if contact.phones else ""
    if not (email or phone):
        return None
    country = country_code(contact.country) if contact.country else ""
    return (
        contact.external_id,
        email,
        phone,
        _digest(meta_name(contact.first_name)) if contact.first_name else "",
        _digest(meta_name(contact.last_name)) if contact.last_name else "",
        _digest(meta_city(contact.city)) if contact.city else "",
        _digest(_zip(contact.postal_code, country)) if contact.postal_code else "",
        _digest(country),
    )


def _digest(text: str) -> str:
    """Return the lowercase hex SHA-256 of a normalised value ('' stays '': a blank key)."""
    return _sha256(text.encode()).hexdigest() if text else ""


def _first_phone(phones: Sequence[str]) -> str:
    return next((digits for digits in map(meta_phone, phones) if digits), "")


def _zip(code: str, country: str) -> str:
    # Meta: US ZIP codes are their first five digits (no ZIP+4).
    text = postal_code(code)
    return text[:5] if country == "us" else text


def payload_json(rows: Sequence[Row]) -> str:
    """Return the ``payload`` parameter: ``{"schema": SCHEMA, "data": rows}`` as JSON."""
    # Rows are encode_row's: every cell but EXTERN_ID a hex digest or ''. So only the ids
    # are looked at: without a quote, a backslash or anything unprintable (control
    # characters, lone surrogates) the rows are joined as they are, about twice as fast
    # as the JSON encoder; else the encoder escapes them. (Leaving keys no row has out of
    # the schema would upload fewer bytes but cost more CPU than the join: measured.)
    ids = "".join([row[0] for row in rows])
    if ids.isprintable() and '"' not in ids and "\\" not in ids:
        data = '"],["'.join(map(_join_cells, rows))
        return f'{{"schema":{_SCHEMA_JSON},"data":[["{data}"]]}}'
    return _dump({"schema": _SCHEMA_LIST, "data": rows})


_DETAILS = attrgetter("details")


def _only_emails(contacts: Sequence[Contact]) -> bool:
    """Return whether no contact has a key but its email and external id (as
    ``read_contacts`` knows; a contact made elsewhere says it may have more)."""
    return not any(map(_DETAILS, contacts))


def _normal(emails: list[str]) -> bool:
    """Return whether every email is already as Meta hashes it (trimmed, lowercase)."""
    blob = "".join(emails)
    return blob.isascii() and blob.lower() == blob and len(blob.split()) <= 1
