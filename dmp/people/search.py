"""Finding a person by whatever a marketer has at hand: an email address, a cookie id, a
CRM id, the site's user id, a phone number or the person id itself.

One MGET over the identity graph's keys for every reading of the text, merges followed:
a text is rarely two things at once, but if it finds two persons both are answered.
"""

from __future__ import annotations

import re

import redis

from dmp.people.identity import IdKind, normalise_email, normalise_phone
from dmp.people.profiles import follow
from dmp.records import PERSON_ID_PATTERN
from dmp.storage import keyspace, multikey

MAX_QUERY = 320
PERSON_ID = re.compile(PERSON_ID_PATTERN)
# The kinds a bare text may be, strongest first (an email and a phone are normalised).
_PLAIN_KINDS = (IdKind.CRM, IdKind.USER, IdKind.UID, IdKind.ANON)


def identifier_keys(text: str) -> list[str]:
    """Return the identity graph's keys a searched text may be (none for an empty one)."""
    value = text.strip()
    if not value or len(value) > MAX_QUERY:
        return []
    keys = []
    email = normalise_email(value)
    if email:
        keys.append(keyspace.identifier(IdKind.EMAIL.value, email))
    keys += [keyspace.identifier(kind.value, value) for kind in _PLAIN_KINDS]
    phone = normalise_phone(value)
    if phone:
        keys.append(keyspace.identifier(IdKind.PHONE.value, phone))
    return keys


def search_persons(r: redis.Redis, text: str) -> list[str]:
    """Return the ids of the live persons a text identifies (merges followed), in order."""
    value = text.strip()
    found: list[str] = []
    keys = identifier_keys(value)
    owners = multikey.get_many(r, keys)
    if PERSON_ID.fullmatch(value.lower()):
        owners.insert(0, value.lower())
    for pid in owners:
        if not pid:
            continue
        live = follow(r, pid)
        if live not in found and r.hexists(keyspace.person(live), "tier"):
            found.append(live)
    return found
