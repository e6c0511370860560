"""The identity rules: normal forms and how a hit resolves to a person."""

from __future__ import annotations

import itertools
import os

import pytest

from dmp.people.identity import (
    Identifier,
    IdKind,
    has_address,
    identifiers_of,
    new_person_id,
    normalise_email,
    normalise_phone,
    resolve,
)
from tests.factories import make_hit


def _ids():
    counter = itertools.count(1)
    return lambda: f"new{next(counter)}"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Anna.Berg@Acme.DE ", "anna.berg@acme.de"),
        ("a+news@sub.acme.co.uk", "a+news@sub.acme.co.uk"),
        ("no-at-sign", ""),
        ("a@b", ""),
        ("a@@b.de", ""),
        ("", ""),
        (42, ""),
        (None, ""),
        ("x" * 250 + "@a.de", ""),
    ],
)
def test_normalise_email(raw, expected):
    """Emails are trimmed and lowercased; implausible ones give ''."""
    assert normalise_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+49 171 1234567", "+491711234567"),
        ("0171 / 123 45-67", "+491711234567"),
        ("0049 (30) 1234567", "+49301234567"),
        ("+1 (415) 555-0100", "+14155550100"),
        ("1711234567", ""),  # no country, no trunk prefix: ambiguous
        ("+49 12", ""),
        ("call me", ""),
        (True, ""),
        (None, ""),
        ("+49³³³³³³³³", ""),  # str.isdigit takes superscripts and other scripts' digits
        ("+49 ١٧١ ١٢٣٤٥٦٧", ""),
    ],
)
def test_normalise_phone(raw, expected):
    """Phone numbers become E.164; German national numbers get +49; junk gives ''."""
    assert normalise_phone(raw) == expected


@pytest.mark.parametrize(
    ("traits", "expected"),
    [
        ({"address": {"street": "Hauptstr. 1", "city": "Köln"}}, True),
        ({"address": {"postalCode": "50667", "city": "Köln"}}, True),
        ({"address": {"city": "Köln"}}, False),
        ({"address": "Hauptstraße 1, 50667 Köln"}, True),
        ({"address": 5}, False),
        ({}, False),
    ],
)
def test_has_address(traits, expected):
    """A postal address needs a street, or a postal code with a city."""
    assert has_address(traits) is expected


def test_identifiers_of_orders_strongest_first():
    """A hit's identifiers come strongest first and normalised."""
    hit = make_hit(
        uid="c1",
        anonymous_id="a1",
        user_id="u1",
        traits={"email": "A@Acme.de", "phone": "0171 1234567", "crm_id": 77},
        external_ids={"hubspot": "h9", "stripe": "cus_1"},
    )
    assert [i.text for i in identifiers_of(hit)] == [
        "email:a@acme.de",
        "crm:77",
        "crm:h9",
        "user:u1",
        "phone:+491711234567",
        "ext:stripe:cus_1",
        "anon:a1",
        "uid:c1",
    ]


def test_resolve_new_person_claims_everything():
    """A hit whose identifiers nobody owns makes a new person that claims them all."""
    ids = [Identifier(IdKind.EMAIL, "a@acme.de"), Identifier(IdKind.UID, "c1")]
    res = resolve(ids, {}, {}, _ids())
    assert (res.person_id, res.is_new, res.claims, res.merges) == ("new1", True, ids, [])


def test_resolve_cookie_person_merges_into_email_owner():
    """An anonymous cookie person that identifies with a known email merges into its owner."""
    email, uid = Identifier(IdKind.EMAIL, "a@acme.de"), Identifier(IdKind.UID, "c1")
    res = resolve([email, uid], {email: "A", uid: "C"}, {"A": "a@acme.de", "C": ""}, _ids())
    assert res.person_id == "A"
    assert res.merges == [("C", uid)]
    assert res.conflicts == [] and res.claims == []


def test_resolve_never_merges_two_emails():
    """A cookie owned by b@ that now identifies as a@ (owned by A) is a conflict, not a merge."""
    email, uid = Identifier(IdKind.EMAIL, "a@acme.de"), Identifier(IdKind.UID, "c1")
    res = resolve([email, uid], {email: "A", uid: "B"}, {"A": "a@acme.de", "B": "b@acme.de"})
    assert res.person_id == "A" and res.merges == []
    assert [(c.person_id, c.other_id, c.identifier) for c in res.conflicts] == [("A", "B", uid)]


def test_resolve_new_email_on_someone_elses_cookie_makes_a_new_person():
    """A shared browser: a new email on a cookie whose person has another email starts a person."""
    email, uid = Identifier(IdKind.EMAIL, "new@acme.de"), Identifier(IdKind.UID, "c1")
    res = resolve([email, uid], {uid: "B"}, {"B": "b@acme.de"}, _ids())
    assert res.is_new and res.person_id == "new1"
    assert res.claims == [email]  # the cookie stays with B
    assert [c.other_id for c in res.conflicts] == ["B"]


def test_resolve_adds_email_to_cookie_person_without_one():
    """A cookie person without an email takes the new email (medium tier follows)."""
    email, uid = Identifier(IdKind.EMAIL, "a@acme.de"), Identifier(IdKind.UID, "c1")
    res = resolve([email, uid], {uid: "C"}, {"C": ""})
    assert res.person_id == "C" and not res.is_new and res.claims == [email]


def test_resolve_strongest_owner_wins_without_email():
    """Without an email in the hit, the owner of the strongest identifier is the person."""
    user, anon = Identifier(IdKind.USER, "u1"), Identifier(IdKind.ANON, "a1")
    res = resolve([user, anon], {user: "U", anon: "N"}, {"U": "", "N": ""})
    assert res.person_id == "U" and res.merges == [("N", anon)]


def test_resolve_two_owners_with_different_emails_via_weak_ids_conflict():
    """Weak ids linking two persons who both have different emails are a conflict."""
    user, anon = Identifier(IdKind.USER, "u1"), Identifier(IdKind.ANON, "a1")
    res = resolve([user, anon], {user: "U", anon: "N"}, {"U": "u@x.de", "N": "n@x.de"})
    assert res.person_id == "U" and res.merges == [] and len(res.conflicts) == 1


def test_person_ids_are_random_hex_and_a_forked_child_draws_its_own():
    """Ids come from a pooled random source; a child after fork never repeats the parent's."""
    first = [new_person_id() for _ in range(2000)]  # crosses several pool refills
    assert len(set(first)) == 2000
    assert all(len(pid) == 16 and int(pid, 16) >= 0 for pid in first)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write, new_person_id().encode())
        os._exit(0)
    os.waitpid(child, 0)
    in_child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert in_child != new_person_id() and len(in_child) == 16
