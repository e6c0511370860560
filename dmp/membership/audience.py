"""Audiences: a segment run's members as a channel may reach them, read fresh from Redis.

A segment says *who*; consent says *how*. A member is reachable on a channel only
through identifiers that hold that channel's consent themselves (see
``dmp.people.consents``): an ad audience of hashed emails needs ``ads`` given for that
email, a cookie audience the browser's ``ads``, a newsletter ``email`` for the person's
current address (and none once they unsubscribed or their address bounced). Consent is
read when the audience is read, not when the segment ran: a withdrawal counts at the
next sync or page of every destination and partner.

Exporters (``exporters.sync``) and the pull API (``dmp.web.audiences``) both read
members through :func:`read_contacts`, a chunk of person ids at a time (one pipelined
round trip per chunk), so a million-member segment never sits in memory.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import redis

from dmp.config import Config
from dmp.membership.results import segments_dir
from dmp.people import consents
from dmp.people.identity import IdKind
from dmp.records import Category
from dmp.storage import keyspace
from dmp.storage.bulk import Bulk, InFlight

CHUNK = 2000  # person ids per pipelined read
# The traits a destination may use to match or address a person (JSON values).
TRAITS = ("first_name", "last_name", "country", "address", "company", "job_title", "email_status")


class Skip(str, Enum):
    """Why a member of a segment is not in the audience a channel sees."""

    GONE = "gone"  # erased, or merged into another person since the run
    NO_CONSENT = "no_consent"  # no identifier holds the channel's consent
    UNSUBSCRIBED = "unsubscribed"  # withdrew ``email`` consent for their address
    REFUSED = "refused"  # said no to the channel (or withdrew) for every identifier
    BOUNCED = "bounced"  # the address bounced (newsletters)
    NO_IDENTIFIER = "no_identifier"  # consented, but nothing the destination can match on


@dataclass(frozen=True, slots=True)
class Contact:
    """One audience member as a channel may use them: only identifiers holding the
    channel's consent; names and address to help matching and addressing."""

    person_id: str
    email: str = ""  # normalised (dmp.people.identity.normalise_email); '' if not usable
    phones: tuple[str, ...] = ()  # E.164
    uids: tuple[str, ...] = ()  # first-party cookie ids
    external_id: str = ""  # the CRM id, else the site's user id (not consent-bearing)
    first_name: str = ""
    last_name: str = ""
    street: str = ""
    postal_code: str = ""
    city: str = ""
    country: str = ""
    company: str = ""
    job_title: str = ""
    double_opt_in: bool = False  # the email consent's proof says double opt-in confirmed
    # Whether it holds a phone, a name or an address part (more keys for the ad platforms
    # to match on). True unless known otherwise: read_contacts knows, and a destination
    # may then skip looking at each field.
    details: bool = True


def read_contacts(
    r: redis.Redis, pids: Sequence[str], channel: Category, skipped: Counter[str] | None = None
) -> list[Contact]:
    """Return the members of ``pids`` reachable on ``channel`` (in the given order), and
    count the others in ``skipped`` by :class:`Skip` reason."""
    found = request_contacts(r, pids, channel).wait()
    return contacts_from(found, pids, channel, Counter() if skipped is None else skipped)


def stream_contacts(
    r: redis.Redis, chunks: Iterable[list[str]], channel: Category, skipped: Counter[str]
) -> Iterator[tuple[list[str], list[Contact]]]:
    """Yield each chunk of person ids with its reachable contacts, the next chunk's reads
    already sent while this one is turned into contacts (Redis works on its own core)."""
    pending: tuple[list[str], InFlight] | None = None
    for pids in chunks:
        sent = (pids, request_contacts(r, pids, channel))
        if pending is not None:
            yield pending[0], contacts_from(pending[1].wait(), pending[0], channel, skipped)
        pending = sent
    if pending is not None:
        yield pending[0], contacts_from(pending[1].wait(), pending[0], channel, skipped)


def request_contacts(r: redis.Redis, pids: Sequence[str], channel: Category) -> InFlight:
    """Send the reads of what ``channel`` may use of each person (raw RESP: a million
    members are three million commands); the replies are read by ``contacts_from``."""
    bulk = Bulk()
    newsletter = channel is Category.EMAIL
    for pid in pids:
        key = keyspace.person(pid)
        bulk.add("HGETALL", key)
        bulk.add("SMEMBERS", key + _IDENTIFIERS)
        bulk.add("HMGET", key + _TRAITS, *TRAITS)
        if newsletter:
            bulk.add("LRANGE", key + _PROOFS, -50, -1)
    return bulk.send(r)


def contacts_from(
    replies: list[Any], pids: Sequence[str], channel: Category, skipped: Counter[str]
) -> list[Contact]:
    """Return the contacts of ``request_contacts``'s replies; count the others."""
    newsletter = channel is Category.EMAIL
    step = 4 if newsletter else 3
    prefix = f"{consents.STATE_PREFIX}{channel.value}|".encode()
    out = []
    for i, pid in enumerate(pids):
        at = i * step
        found = _contact(
            pid,
            replies[at],
            replies[at + 1],
            replies[at + 2],
            replies[at + 3] if newsletter else (),
            prefix,
            newsletter,
        )
        if isinstance(found, Skip):
            skipped[found.value] += 1
        else:
            out.append(found)
    return out


_IDENTIFIERS = keyspace.facet_suffix("identifiers")
_TRAITS = keyspace.facet_suffix("traits")
_PROOFS = keyspace.facet_suffix(consents.LOG_FACET)


def _contact(
    pid: str,
    flat: list[bytes] | dict[bytes, bytes],
    ids: list[bytes],
    raw_traits: list[bytes | None],
    proofs: Sequence[bytes],
    prefix: bytes,
    newsletter: bool,
) -> Contact | Skip:
    """Return what a channel may use of one person (raw replies: a profile hash as a
    flat list, identifiers, traits), or why it may use nothing."""
    if not flat:
        return Skip.GONE
    # A hash is a map in RESP3 and a flat list in RESP2, as the server speaks it.
    profile = flat if isinstance(flat, dict) else dict(zip(flat[::2], flat[1::2], strict=True))
    if profile.get(b"merged_into"):
        return Skip.GONE
    email = profile.get(b"email", b"").decode()
    said = _given(profile, prefix, "email", email) if email else None
    traits = {k: json.loads(v) for k, v in zip(TRAITS, raw_traits, strict=True) if v is not None}
    if newsletter:  # a newsletter goes to the current address only
        if not email or said is None:
            return Skip.NO_CONSENT if email else Skip.NO_IDENTIFIER
        if said is False:
            return Skip.UNSUBSCRIBED
        if traits.get("email_status") == "bounced":
            return Skip.BOUNCED
        return _build(pid, traits, email=email, doi=_double_opt_in(proofs, email))
    kinds = _by_kind(ids)
    phones = tuple(p for p in kinds.get(IdKind.PHONE, ()) if _given(profile, prefix, "phone", p))
    uids = tuple(u for u in kinds.get(IdKind.UID, ()) if _given(profile, prefix, "uid", u))
    usable_email = email if said else ""
    if not (usable_email or phones or uids):
        withdrew = any(k.startswith(prefix) and v[:1] == b"0" for k, v in profile.items())
        return Skip.REFUSED if withdrew else Skip.NO_CONSENT
    external = next(iter(sorted(kinds.get(IdKind.CRM, ()) or kinds.get(IdKind.USER, ()))), "")
    return _build(pid, traits, email=usable_email, phones=phones, uids=uids, ext=external)


def _given(profile: dict[bytes, bytes], prefix: bytes, kind: str, value: str) -> bool | None:
    """Return an identifier's state of the channel's consent (None: never said)."""
    state = profile.get(prefix + f"{kind}:{value}".encode())
    return None if state is None else state[:1] == b"1"


def _build(
    pid: str,
    traits: dict[str, Any],
    *,
    email: str = "",
    phones: tuple[str, ...] = (),
    uids: tuple[str, ...] = (),
    ext: str = "",
    doi: bool = False,
) -> Contact:
    address = traits.get("address")
    address = address if isinstance(address, dict) else {}

    def text(value: Any) -> str:
        return value.strip() if isinstance(value, str) else ""

    first, last = text(traits.get("first_name")), text(traits.get("last_name"))
    street, city = text(address.get("street")), text(address.get("city"))
    postal = text(address.get("postal_code") or address.get("postalCode"))
    country = text(traits.get("country") or address.get("country"))
    return Contact(
        person_id=pid,
        email=email,
        phones=tuple(sorted(phones)),
        uids=tuple(sorted(uids)),
        external_id=ext,
        first_name=first,
        last_name=last,
        street=street,
        postal_code=postal,
        city=city,
        country=country,
        company=text(traits.get("company")),
        job_title=text(traits.get("job_title")),
        double_opt_in=doi,
        details=bool(phones or first or last or street or postal or city or country),
    )


def _by_kind(ids: list[bytes]) -> dict[IdKind, list[str]]:
    out: dict[IdKind, list[str]] = {}
    for raw in ids:
        kind, _, value = raw.decode().partition(":")
        if kind in IdKind._value2member_map_:
            out.setdefault(IdKind(kind), []).append(value)
    return out


def _double_opt_in(proofs: Sequence[bytes], email: str) -> bool:
    """Return whether the newest proof granting ``email`` consent for the address says
    double opt-in confirmed (newsletter tools report it; a web form's tick does not)."""
    wanted = f"{IdKind.EMAIL.value}:{email}"
    for raw in reversed(proofs):
        record = json.loads(raw)
        if record.get("identifier") != wanted:
            continue
        granted = (record.get("consent") or {}).get(Category.EMAIL.value)
        if granted is None and record.get("category") == Category.EMAIL.value:
            granted = record.get("granted")
        if granted is True:
            return record.get("double_opt_in") is True
        if granted is False:
            return False
    return False


def member_ids(path: Path, segment_id: str, chunk: int = CHUNK) -> Iterator[list[str]]:
    """Yield a members file's person ids of one segment, sorted, ``chunk`` at a time."""
    pending: list[str] = []
    for batch in pq.ParquetFile(path).iter_batches(
        batch_size=max(chunk, 10_000), columns=["segment_id", "person_id"]
    ):
        mine = batch.filter(pc.equal(batch.column(0), segment_id))
        pending.extend(mine.column(1).to_pylist())
        while len(pending) >= chunk:
            yield pending[:chunk]
            pending = pending[chunk:]
    if pending:
        yield pending


def members_file(config: Config, run: dict[str, Any]) -> Path:
    """Return the members file of a run's manifest."""
    return segments_dir(config) / run["members_file"]
