"""The identity graph's rules: identifiers, their normal forms, and how a hit finds its person.

Every identifier maps to exactly one person id in Redis (``dmp:id:<kind>:<value>``). This
module holds the pure part: normalisation and the resolution decision. The worker does
the I/O (one MGET for a whole batch) and ``dmp.people.profiles`` applies the outcome.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, NamedTuple

from dmp.records import Hit
from dmp.storage import keyspace


class IdKind(str, Enum):
    """An identifier kind, strongest first: the owner of the strongest one wins a hit."""

    EMAIL = "email"  # normalised address; a person has at most one
    CRM = "crm"  # a CRM record id
    USER = "user"  # the site's own user id (Segment userId)
    PHONE = "phone"  # E.164
    EXTERNAL = "ext"  # other external ids, value "<type>:<id>"
    ANON = "anon"  # Segment anonymousId
    UID = "uid"  # the dmp_uid first-party cookie

    # Enum hashes by name in Python code; the worker hashes identifiers millions of times,
    # and the str value's own hash is equal-consistent and runs in C.
    __hash__ = str.__hash__


STRENGTH = {kind: rank for rank, kind in enumerate(IdKind)}
CRM_ID_TYPES = frozenset({"crm", "crm_id", "salesforce", "hubspot", "pipedrive", "dynamics"})
CONTACT_KINDS = frozenset({"phone", "address", "crm"})  # with an email they make a person high

_EMAIL = re.compile(
    r"^[a-z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9-]+)+$"
)
_PHONE_JUNK = re.compile(r"[\s().\-/]")


class Identifier(NamedTuple):
    """One identifier of a person (a NamedTuple: the worker hashes millions of them)."""

    kind: IdKind
    value: str

    @property
    def text(self) -> str:
        """Return ``kind:value``, the form kept in a person's identifier set."""
        # str.__add__ reads a str-enum member's own text: "email" + ":" without the
        # Enum.value descriptor (the worker builds this for every new identifier).
        return self.kind + ":" + self.value

    @classmethod
    def from_text(cls, text: str) -> Identifier:
        """Return the identifier written by :attr:`text`."""
        kind, _, value = text.partition(":")
        return cls(IdKind(kind), value)


EMAIL_SHA256 = "email_sha256"  # not an identifier kind: a lookup key to the email's owner


def email_sha256(email: str) -> str:
    """Return the hex SHA-256 of a normalised email (how ad tools and platforms hash it)."""
    return hashlib.sha256(email.encode()).hexdigest()


def id_keys(ident: Identifier) -> list[str]:
    """Return the keys that lead from an identifier to its person: its own and, for an
    email, its SHA-256 (ad tools look people up by hashed email)."""
    own = keyspace.identifier(ident.kind.value, ident.value)
    if ident.kind is IdKind.EMAIL:
        return [own, keyspace.identifier(EMAIL_SHA256, email_sha256(ident.value))]
    return [own]


def normalise_email(value: Any) -> str:
    """Return the lowercased, trimmed address, or '' if it is no plausible email address."""
    if not isinstance(value, str) or len(value) > 254:
        return ""
    email = value.strip().lower()
    return email if _EMAIL.match(email) else ""


def normalise_phone(value: Any, country_code: str = "49") -> str:
    """Return a phone number in E.164 (national numbers get ``country_code``), or ''."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or len(value) > 40:
        return ""
    digits = _PHONE_JUNK.sub("", value.strip())
    if digits.startswith("+"):
        digits = digits[1:]
    elif digits.startswith("00"):
        digits = digits[2:]
    elif digits.startswith("0"):
        digits = country_code + digits[1:]
    else:
        return ""  # no country: ambiguous, so not an identifier
    if not _PHONE_DIGITS.fullmatch(digits) or digits[0] == "0":
        return ""
    return "+" + digits


_PHONE_DIGITS = re.compile(r"[0-9]{8,15}")  # ASCII only: str.isdigit takes '³' and '١' too


def has_address(traits: Mapping[str, Any]) -> bool:
    """Return whether traits carry a postal address (street, or postal code and city)."""
    address = traits.get("address")
    if isinstance(address, str):
        return len(address.strip()) >= 8
    if not isinstance(address, Mapping):
        return False
    street = address.get("street")
    code, city = address.get("postalCode") or address.get("postal_code"), address.get("city")
    return bool(isinstance(street, str) and street.strip()) or bool(code and city)


def identifiers_of(hit: Hit) -> list[Identifier]:
    """Return every identifier a hit carries, strongest first."""
    if not (hit.traits or hit.external_ids or hit.user_id or hit.anonymous_id):
        return [Identifier(IdKind.UID, hit.uid)] if hit.uid else []  # a browser hit
    found: list[Identifier] = []
    traits = hit.traits
    email = normalise_email(traits.get("email"))
    if email:
        found.append(Identifier(IdKind.EMAIL, email))
    crm = traits.get("crm_id")
    if isinstance(crm, str | int) and not isinstance(crm, bool) and str(crm).strip():
        found.append(Identifier(IdKind.CRM, str(crm).strip()[:128]))
    for kind, value in sorted(hit.external_ids.items()):
        if kind.lower() in CRM_ID_TYPES:
            found.append(Identifier(IdKind.CRM, value))
        else:
            found.append(Identifier(IdKind.EXTERNAL, f"{kind.lower()}:{value}"))
    if hit.user_id:
        found.append(Identifier(IdKind.USER, hit.user_id))
    phone = normalise_phone(traits.get("phone"))
    if phone:
        found.append(Identifier(IdKind.PHONE, phone))
    if hit.anonymous_id:
        found.append(Identifier(IdKind.ANON, hit.anonymous_id))
    if hit.uid:
        found.append(Identifier(IdKind.UID, hit.uid))
    if hit.previous_id:  # alias: the previous id is a user id or an anonymous id
        found.append(Identifier(IdKind.USER, hit.previous_id))
        found.append(Identifier(IdKind.ANON, hit.previous_id))
    unique = list(dict.fromkeys(found))
    unique.sort(key=lambda i: STRENGTH[i.kind])
    return unique


class _IdPool:
    """Random person ids, 512 per read of the OS's random source.

    One ``os.urandom`` call per id would cost a system call and, worse, a hand-over of
    the GIL (to the worker's flush thread) for each new person. The pool is per process:
    a forked child starts empty, so parent and child never share random bytes.
    """

    ID_BYTES = 8
    POOL_BYTES = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self._hex = ""
        self._at = 0

    def take(self) -> str:
        width = 2 * self.ID_BYTES
        with self._lock:
            if self._at >= len(self._hex):
                self._hex, self._at = os.urandom(self.POOL_BYTES).hex(), 0
            start = self._at
            self._at = start + width
            return self._hex[start : start + width]


_ids = _IdPool()


def new_person_id() -> str:
    """Return a fresh random person id (16 hex digits)."""
    return _ids.take()


@dataclass(frozen=True, slots=True)
class Conflict:
    """Two persons an identifier links that must not be merged automatically."""

    person_id: str
    other_id: str
    identifier: Identifier
    reason: str


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a hit means for the graph: its person, who merges into it, what it claims."""

    person_id: str
    is_new: bool
    merges: list[tuple[str, Identifier]] = field(default_factory=list)  # (merged pid, link)
    conflicts: list[Conflict] = field(default_factory=list)
    claims: list[Identifier] = field(default_factory=list)  # unowned ids the person takes


def resolve(
    ids: list[Identifier],
    owners: Mapping[Identifier, str],
    emails: Mapping[str, str],
    make_id: Callable[[], str] = new_person_id,
) -> Resolution:
    """Return how a hit with ``ids`` (strongest first) resolves.

    ``owners`` maps owned identifiers to person ids and ``emails`` person ids to their
    email ('' if none). The hit belongs to the owner of its strongest owned identifier
    compatible with its email; other owners merge into that person unless both persons
    have different emails, which is recorded as a conflict instead.
    """
    hit_email = next((i.value for i in ids if i.kind is IdKind.EMAIL), "")
    owned = [(i, owners[i]) for i in ids if i in owners]
    target, is_new = "", False
    for _, pid in owned:  # strongest first
        if not hit_email or emails.get(pid, "") in ("", hit_email):
            target = pid
            break
    if not target:
        target, is_new = make_id(), True
    target_email = hit_email or emails.get(target, "")
    merges: list[tuple[str, Identifier]] = []
    conflicts: list[Conflict] = []
    done = {target}
    for ident, pid in owned:
        if pid in done:
            continue
        done.add(pid)
        other_email = emails.get(pid, "")
        if other_email and target_email and other_email != target_email:
            reason = f"{ident.kind.value} is shared by persons with different emails"
            conflicts.append(Conflict(target, pid, ident, reason))
        else:
            merges.append((pid, ident))
            target_email = target_email or other_email
    # Unowned identifiers join the person. An email the target would not fit cannot be
    # among them: the target was chosen for having no email or this one.
    claims = [i for i in ids if i not in owners]
    return Resolution(target, is_new, merges, conflicts, claims)
