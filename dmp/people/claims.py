"""What a browser may say about a person: the rules that keep a public write key harmless.

A site's public write key sits in every page's source, so anybody can send hits with it.
What such a hit says is a *claim*; what the company's own systems send (server keys, CRM
and newsletter imports) is *trusted* (``Hit.trusted``). A claim

- may link its own browser (cookie, anonymous id) to a person: signing up with an email
  known from the CRM joins the browser's history to that lead, recorded in the merge log
  with its source, and undoable (``dmp persons unmerge``);
- adds contact data (email, phone, CRM id, postal address) only to the browser's own
  person (the one its browser ids led to, or a new one), and only while that person
  holds nothing from a trusted source: it never raises another person's tier;
- merges into the person it names only a browser person without contact data (the
  anonymous history of a sign-up); any other such merge is recorded as a conflict;
- never overwrites a trait a trusted source set;
- grants or withdraws consent only for its own browser ids and for an email or phone
  that no trusted source holds (``dmp.people.consents.holders``).

Pure functions: the worker (``dmp.ingest.batch``) applies them while it resolves a batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dmp.people.consents import BROWSER_KINDS
from dmp.people.identity import Identifier, IdKind
from dmp.people.profiles import PersonState, trusted_trait

CONTACT_ID_KINDS = frozenset({IdKind.EMAIL, IdKind.PHONE, IdKind.CRM})


def browser_person(ids: Iterable[Identifier], owners: Mapping[Identifier, str]) -> str:
    """Return the person the hit's own browser ids belonged to before it ('' if none)."""
    return next((owners[i] for i in ids if i.kind in BROWSER_KINDS and i in owners), "")


def may_add_contact(trusted: bool, is_new: bool, own: str, target: PersonState) -> bool:
    """Return whether the hit may add contact data to ``target``."""
    if trusted:
        return True
    return (is_new or own == target.person_id) and not target.holds_trusted


def linkable(claimed: Iterable[Identifier], contact_ok: bool) -> list[Identifier]:
    """Return the unowned identifiers a hit may link to its person."""
    return [i for i in claimed if contact_ok or i.kind not in CONTACT_ID_KINDS]


def may_merge(trusted: bool, other: PersonState) -> bool:
    """Return whether the hit may merge ``other`` into the person it resolved to."""
    return trusted or not (other.email or other.contact or other.holds_trusted)


CONTACT_TRAITS = frozenset({"email", "phone", "address", "crm_id"})


def writable_traits(
    trusted: bool, traits: Mapping[str, Any], target: PersonState, contact_ok: bool
) -> dict[str, Any]:
    """Return the traits the hit may set on ``target``: a claim leaves trusted ones be,
    and sets contact traits only where it may add contact data."""
    if trusted:
        return dict(traits)
    return {
        k: v
        for k, v in traits.items()
        if trusted_trait(k[:128]) not in target.trusted
        and (contact_ok or k.lower() not in CONTACT_TRAITS)
    }
