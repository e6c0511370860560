"""The rows of the audience pull API: who a partner may reach, and what it must remove.

- **Members and entered rows** come from :func:`dmp.membership.audience.read_contacts`
  with the ``ads`` channel: a cookie id with its browser's ``ads`` consent, the SHA-256
  of the person's current email with ``ads`` given for that email. Consent is read as the
  page is made, a chunk of persons per round trip.
- **Left rows** carry the identifiers a partner may hold: those with ``ads`` given now,
  and those withdrawn after a grant that the person's consent log records (a partner
  was never given an identifier that never held the consent, so none is named to it).
- **The consent re-check.** A member who withdraws ``ads`` while staying in the segment
  changes no run's file. Each changes listing therefore re-checks the next
  :data:`RECHECK` members of the audience in person-id order (where the last one stopped
  travels in the cursor, and wraps around) and adds a left row for each identifier
  withdrawn after a grant. The cost per call is bounded; a withdrawal reaches a partner
  within members / RECHECK calls, and is named again once per round (a removal of what
  is gone already changes nothing for the partner).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import polars as pl
import redis

from dmp.membership.audience import CHUNK, read_contacts
from dmp.people import consents
from dmp.people.identity import EMAIL_SHA256, Identifier, IdKind, email_sha256
from dmp.records import Category
from dmp.storage import keyspace
from dmp.web.audiencefiles import MemberFile

KINDS = ("uid", EMAIL_SHA256)  # the identifiers the API hands out
RECHECK = 20_000  # members whose consent each changes listing re-checks
# A cookie id as the lookup takes it: no cell of a CSV answer can start a formula with
# these characters (no parentheses, quotes or separators), so ids are sent as they are.
UID = re.compile(r"[A-Za-z0-9._\-]{1,64}")
_HOLDS = {"uid": IdKind.UID, EMAIL_SHA256: IdKind.EMAIL}  # the identifier behind each kind

Rows = tuple[list[str], ...]  # columns: identifiers (and, for changes, entered | left)


def reachable(r: redis.Redis, pids: Sequence[str], kind: str) -> list[str]:
    """Return the identifiers of ``kind`` through which ``pids`` may be reached with ads."""
    contacts = read_contacts(r, pids, Category.ADS)
    if kind == "uid":
        return [u for c in contacts for u in c.uids if UID.fullmatch(u)]
    return [email_sha256(c.email) for c in contacts if c.email]


def removable(
    r: redis.Redis, pids: Sequence[str], kind: str, *, withdrawn_only: bool = False
) -> list[str]:
    """Return the identifiers of ``kind`` of ``pids`` that a partner may hold: with ``ads``
    given now (unless ``withdrawn_only``), or withdrawn after a grant."""
    pipe = r.pipeline(transaction=False)
    for pid in pids:
        pipe.hgetall(keyspace.person(pid))
    wanted, given = _HOLDS[kind], []
    withdrawn: dict[str, list[Identifier]] = {}
    for pid, profile in zip(pids, pipe.execute(), strict=True):
        if not profile or profile.get("merged_into"):  # erased or merged: nothing to name
            continue
        for name, value in profile.items():
            if not consents.is_state_field(name):
                continue
            category, ident = consents.split_field(name)
            if category != Category.ADS.value or ident.kind is not wanted:
                continue
            if consents.parse_value(value)[0]:
                given.append(ident)
            else:
                withdrawn.setdefault(pid, []).append(ident)
    found = _granted_before(r, withdrawn) if withdrawn else []
    return _rows(found if withdrawn_only else given + found, kind)


def _granted_before(r: redis.Redis, withdrawn: dict[str, list[Identifier]]) -> list[Identifier]:
    """Return the identifiers of ``withdrawn`` whose consent log holds an ``ads`` grant."""
    pipe = r.pipeline(transaction=False)
    for pid in withdrawn:
        pipe.lrange(keyspace.person(pid, consents.LOG_FACET), 0, -1)
    out = []
    for idents, log in zip(withdrawn.values(), pipe.execute(), strict=True):
        granted = {
            record["identifier"]
            for record in consents.history(log)
            if record.get("category") == Category.ADS.value and record.get("granted") is True
        }
        out += [ident for ident in idents if ident.text in granted]
    return out


def _rows(idents: list[Identifier], kind: str) -> list[str]:
    if kind == "uid":
        return sorted(i.value for i in idents if UID.fullmatch(i.value))
    return sorted(email_sha256(i.value) for i in idents)


def member_rows(
    r: redis.Redis, members: MemberFile, sid: str, after: str, end: str, kind: str
) -> Iterator[Rows]:
    """Yield the identifiers of the members in (after, end], a chunk of persons at a time."""
    for pids in members.pids(sid, after, end, CHUNK):
        yield (reachable(r, pids, kind),)


def change_rows(r: redis.Redis, page: pl.DataFrame, kind: str) -> Iterator[Rows]:
    """Yield the rows of a page of net changes (``person_id, change``), a chunk at a time."""
    for start in range(0, page.height, CHUNK):
        part = page.slice(start, CHUNK)
        entered = part.filter(pl.col("change") == "entered")["person_id"].to_list()
        left = part.filter(pl.col("change") == "left")["person_id"].to_list()
        ids = reachable(r, entered, kind)
        gone = removable(r, left, kind)
        yield ids + gone, ["entered"] * len(ids) + ["left"] * len(gone)


def recheck_span(members: MemberFile, sid: str, after: str) -> tuple[str, str]:
    """Return the last member the re-check after ``after`` covers ('' : none), and where
    the next one starts ('' : from the first member again)."""
    end, more = members.bound(sid, after, RECHECK)
    return end, end if more else ""


def recheck_rows(
    r: redis.Redis, members: MemberFile, sid: str, after: str, end: str, kind: str
) -> Iterator[Rows]:
    """Yield a left row for each identifier withdrawn after a grant among the members in
    (after, end]."""
    for pids in members.pids(sid, after, end, CHUNK):
        gone = removable(r, pids, kind, withdrawn_only=True)
        yield gone, ["left"] * len(gone)
