"""Identifiers as each platform wants them: normalised, then SHA-256 in lowercase hex.

The platforms agree on SHA-256 and disagree on the rest (``../shared/CONTRACTS.md``):

- email: Meta trims and lowercases; Google also removes all whitespace and, for
  gmail.com and googlemail.com, the dots and any ``+suffix`` of the local part;
- phone: Meta wants digits only, country code first, no ``+`` and no leading zeros;
  Google wants E.164 with the ``+``;
- names: lowercase; Meta also without punctuation; city lowercase without spaces or
  punctuation (Meta);
- country: ISO 3166-1 alpha-2, lowercase; postal codes: lowercase without spaces or
  dashes (Meta hashes them, Google sends them plain).

dmp keeps emails normalised (trimmed, lowercased) and phones in E.164 already (see
``dmp.people.identity``); these functions add each platform's own steps.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_SPACE = re.compile(r"\s+")
_NOT_WORD = re.compile(r"[^\w]|_", re.UNICODE)  # punctuation and spaces (letters stay)
_GMAIL = frozenset({"gmail.com", "googlemail.com"})


def sha256_hex(text: str) -> str:
    """Return the lowercase hex SHA-256 of a text's UTF-8 bytes."""
    return hashlib.sha256(text.encode()).hexdigest()


def meta_email(email: str) -> str:
    """Return an email as Meta hashes it: trimmed, lowercase."""
    return email.strip().lower()


def google_email(email: str) -> str:
    """Return an email as Google Customer Match hashes it: lowercase, no whitespace, and
    for Gmail addresses no dots and no ``+suffix`` in the local part."""
    text = _SPACE.sub("", email).lower()
    local, at, domain = text.rpartition("@")
    if at and domain in _GMAIL:
        local = local.split("+", 1)[0].replace(".", "")
        return f"{local}@{domain}"
    return text


def meta_phone(e164: str) -> str:
    """Return an E.164 number as Meta hashes it: digits only, country code first."""
    return "".join(c for c in e164 if c.isascii() and c.isdigit()).lstrip("0")


def google_phone(e164: str) -> str:
    """Return an E.164 number as Google hashes it: ``+`` and digits."""
    digits = meta_phone(e164)
    return f"+{digits}" if digits else ""


def meta_name(name: str) -> str:
    """Return a first or last name as Meta hashes it: lowercase, no punctuation or
    spaces (letters with accents stay, in NFC)."""
    return _NOT_WORD.sub("", unicodedata.normalize("NFC", name).lower())


def google_name(name: str) -> str:
    """Return a first or last name as Google hashes it: trimmed, lowercase."""
    return " ".join(unicodedata.normalize("NFC", name).lower().split())


def meta_city(city: str) -> str:
    """Return a city as Meta hashes it: lowercase, no spaces or punctuation."""
    return meta_name(city)


def postal_code(code: str) -> str:
    """Return a postal code as Meta hashes it: lowercase, no spaces or dashes."""
    return re.sub(r"[\s\-]", "", code).lower()


def google_postal_code(code: str) -> str:
    """Return a postal code as Google takes it (plain, not hashed): trimmed, inner
    spaces kept (``WC2H 8LG``), uppercase."""
    return " ".join(code.split()).upper()


# Country names people type into CRMs (German and English), to ISO 3166-1 alpha-2.
_COUNTRIES = {
    "deutschland": "de",
    "germany": "de",
    "österreich": "at",
    "oesterreich": "at",
    "austria": "at",
    "schweiz": "ch",
    "switzerland": "ch",
    "suisse": "ch",
    "liechtenstein": "li",
    "luxemburg": "lu",
    "luxembourg": "lu",
    "niederlande": "nl",
    "netherlands": "nl",
    "belgien": "be",
    "belgium": "be",
    "frankreich": "fr",
    "france": "fr",
    "italien": "it",
    "italy": "it",
    "spanien": "es",
    "spain": "es",
    "polen": "pl",
    "poland": "pl",
    "tschechien": "cz",
    "czechia": "cz",
    "czech republic": "cz",
    "dänemark": "dk",
    "denmark": "dk",
    "schweden": "se",
    "sweden": "se",
    "vereinigtes königreich": "gb",
    "united kingdom": "gb",
    "uk": "gb",
    "großbritannien": "gb",
    "usa": "us",
    "united states": "us",
    "vereinigte staaten": "us",
}


def country_code(country: str) -> str:
    """Return a country as ISO 3166-1 alpha-2 lowercase ('' when it is neither a code nor
    a name dmp knows)."""
    text = " ".join(country.lower().split())
    if len(text) == 2 and text.isascii() and text.isalpha():
        return text
    return _COUNTRIES.get(text, "")
