"""Google Customer Match rows: a contact's identifiers normalised and hashed as Google
documents (``exporters.identifiers``), and what a request or an upload file says of them.

A row is (email, phones, given name, family name, region, postal code): the email and
names SHA-256 in lowercase hex, the phones (E.164 with ``+``, then hashed) space-joined,
region and postal code plain. The address goes only with all four of its parts; a member
holds at most ``MAX_IDENTIFIERS``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Sequence

from dmp.membership.audience import Contact
from exporters import identifiers
from exporters.destination import Row
from exporters.identifiers import google_email, google_name, google_phone, sha256_hex

MAX_IDENTIFIERS = 10  # per audience member
CSV_HEADER = ("Email", "Phone", "First Name", "Last Name", "Country", "Zip")
_MEMBER = '{"userData":{"userIdentifiers":['
_CONSENT = ',"consent":{"adUserData":"CONSENT_GRANTED","adPersonalization":"CONSENT_GRANTED"}'


def encode_rows(contacts: Sequence[Contact]) -> list[Row | None]:
    """Return each contact's row (None: nothing Google can match on)."""
    sha256 = hashlib.sha256
    hashes = [sha256(t.encode()).hexdigest() if t else "" for t in normal_emails(contacts)]
    rows: list[Row | None] = [(h, "", "", "", "", "") if h else None for h in hashes]
    for i in [i for i, c in enumerate(contacts) if c.phones or c.first_name]:
        rows[i] = _full_row(contacts[i], hashes[i])
    return rows


def normal_emails(contacts: Sequence[Contact]) -> list[str]:
    """Return each contact's email as Google hashes it (``identifiers.google_email``),
    skipping that work where it would change nothing."""
    emails = [c.email for c in contacts]
    blob = "".join(emails)
    # dmp keeps emails trimmed and lowercase (dmp.people.identity): one look at the whole
    # batch tells whether any has whitespace or capitals; then only Gmail addresses
    # (whose domains end in "mail.com") have more to do.
    if blob.isascii() and blob.lower() == blob and blob.split() in ([blob], []):
        if "mail.com" not in blob:
            return emails
        return [google_email(e) if e.endswith("mail.com") else e for e in emails]
    return [google_email(e) for e in emails]


def members_json(rows: Sequence[Row], consent: bool, before: str = "", after: str = "") -> str:
    """Return the ``audienceMembers`` JSON array of ``rows`` (with consent: an ingest),
    between ``before`` and ``after`` (one join: a batch's body is megabytes)."""
    tail = "]}" + (_CONSENT if consent else "") + "}"
    head, short = _MEMBER + '{"emailAddress":"', '"}' + tail  # an email-only member
    parts = [r[0] for r in rows if not (r[1] or r[2])]
    if rows and len(parts) == len(rows):  # email-only members, the common case
        sep, first, last = short + "," + head, "[" + head, short + "]"
    else:
        parts = [
            head + r[0] + short if not (r[1] or r[2]) else _MEMBER + _identifiers(r) + tail
            for r in rows
        ]
        sep, first, last = ",", "[", "]"
    if not parts:
        return before + "[]" + after
    parts[0] = before + first + parts[0]
    parts[-1] += last + after
    return sep.join(parts)


def csv_text(rows: Sequence[Row]) -> str:
    """Return rows as a Customer Match upload file (one Phone column per phone)."""
    phones = [row[1].split() for row in rows]
    width = max(1, max(map(len, phones), default=0))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([CSV_HEADER[0], *[CSV_HEADER[1]] * width, *CSV_HEADER[2:]])
    for row, numbers in zip(rows, phones, strict=True):
        writer.writerow([row[0], *numbers, *[""] * (width - len(numbers)), *row[2:]])
    return out.getvalue()


def _full_row(contact: Contact, email: str) -> Row | None:
    """Return the row of a contact with phones or names (the address only when all four
    parts are known; phones up to the identifier limit)."""
    region = identifiers.country_code(contact.country).upper() if contact.country else ""
    postal = identifiers.google_postal_code(contact.postal_code) if contact.postal_code else ""
    given, family = google_name(contact.first_name), google_name(contact.last_name)
    address = bool(given and family and region and postal)
    room = MAX_IDENTIFIERS - bool(email) - address
    numbers = dict.fromkeys(filter(None, map(google_phone, contact.phones)))
    phones = " ".join(sha256_hex(p) for p in list(numbers)[:room])
    if address:
        return (email, phones, sha256_hex(given), sha256_hex(family), region, postal)
    return (email, phones, "", "", "", "") if email or phones else None


def _identifiers(row: Row) -> str:
    """Return the JSON of a row's identifiers (comma-separated objects)."""
    email, phones, given, family, region, postal = row
    parts = [f'{{"emailAddress":"{email}"}}'] if email else []
    parts += [f'{{"phoneNumber":"{phone}"}}' for phone in phones.split()]
    if given:
        address = {"givenName": given, "familyName": family, "regionCode": region}
        address["postalCode"] = postal
        parts.append(json.dumps({"address": address}, separators=(",", ":")))
    return ",".join(parts)
