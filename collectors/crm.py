"""CRM records as hits: each row an ``identify`` with the person's CRM data.

A row needs an email, a CRM id or a phone number to find its person. Its email, phone
and CRM id become identifiers (an emailed person with a CRM record is ``high``); the
company data become traits. A ``stage`` column is what sales set: it is recorded as the
person's stage once the rows are ingested (see :func:`stage_updates`).
"""

from __future__ import annotations

import re
import time
from typing import Any

from collectors.imports import Fields, RowError, excerpt, parse_time
from dmp.people.identity import Identifier, IdKind, normalise_email, normalise_phone
from dmp.records import Hit, Source, Stage

SITE = "import:crm"  # the site id of imported rows (no site slug has a colon)
FIELDS = Fields(
    {
        "email": ("e_mail", "email_address", "mail"),
        "phone": ("telefon", "phone_number", "tel", "mobile"),
        "crm_id": ("id", "contact_id", "record_id", "kunden_nr", "kundennummer"),
        "first_name": ("firstname", "vorname"),
        "last_name": ("lastname", "nachname"),
        "company": ("firma", "company_name", "account", "unternehmen"),
        "job_title": ("title", "position", "jobtitle", "funktion"),
        "employees": ("mitarbeiter", "employee_count", "company_size"),
        "industry": ("branche",),
        "country": ("land",),
        "street": ("strasse", "straße", "address"),
        "postal_code": ("plz", "zip", "zip_code", "postcode"),
        "city": ("ort", "stadt"),
        "stage": ("lifecycle_stage", "lead_status", "status"),
        "deal_value": ("deal", "amount", "value", "umsatz"),
        "updated_at": ("updated", "modified", "last_modified", "time"),
    }
)
_DIGITS = re.compile(r"[0-9]{1,9}")  # str.isdigit takes '²' and '١٢' too; int() fails on '²'
_TRAITS = ("first_name", "last_name", "company", "job_title", "industry", "country")


def crm_hit(row: dict[str, Any], digest: str, now_ms: int | None = None) -> Hit:
    """Return the hit of one mapped CRM row (RowError says what is wrong with it)."""
    now = now_ms or int(time.time() * 1000)
    traits: dict[str, Any] = {}
    if row.get("email"):
        email = normalise_email(row["email"])
        if not email:
            raise RowError(f"email: {excerpt(row['email'])} is not an email address")
        traits["email"] = email
    if row.get("phone"):
        phone = normalise_phone(row["phone"])
        if not phone or not phone.isascii():  # normalise_phone takes '³' as a digit
            raise RowError(f"phone: {excerpt(row['phone'])} is not a phone number")
        traits["phone"] = row["phone"]
    if row.get("crm_id"):
        if len(row["crm_id"]) > 128:
            raise RowError("crm_id: longer than 128 characters")
        traits["crm_id"] = row["crm_id"]
    if not traits:
        raise RowError("no email, crm_id or phone to find the person by")
    for name in _TRAITS:
        if row.get(name):
            traits[name] = row[name][:500]
    if row.get("employees"):
        traits["employees"] = _whole(row["employees"], "employees")
    if row.get("deal_value"):
        traits["deal_value"] = _amount(row["deal_value"])
    address = {k: row[k][:500] for k in ("street", "postal_code", "city") if row.get(k)}
    if address:
        traits["address"] = address
    if row.get("stage"):
        traits["stage"] = parse_stage(row["stage"]).value
    ts = parse_time(row.get("updated_at"), now, "updated_at")
    return Hit(
        event_id=f"crm-{digest}",
        site_id=SITE,
        source=Source.CRM.value,
        type="identify",
        event="crm_update",
        received_at=now,
        timestamp=ts,
        channel="crm",
        traits=traits,
        trusted=True,
    )


def parse_stage(value: str) -> Stage:
    """Return the stage a CRM spells (``SQL``, ``Sales Accepted Lead`` …)."""
    text = value.strip().lower().replace("-", " ").replace("_", " ")
    spelled = {
        "sales accepted lead": Stage.SAL,
        "sales qualified lead": Stage.SQL,
        "marketing qualified lead": Stage.MQL,
        "closed won": Stage.WON,
        "closed lost": Stage.LOST,
        "customer": Stage.WON,
        "kunde": Stage.WON,
        "verloren": Stage.LOST,
        "gewonnen": Stage.WON,
        "new": Stage.LEAD,
        "neu": Stage.LEAD,
    }
    if text in Stage._value2member_map_:
        return Stage(text)
    if text in spelled:
        return spelled[text]
    known = ", ".join(s.value for s in Stage)
    raise RowError(f"stage: {excerpt(value)} is not a stage ({known})")


def person_identifier(hit: Hit) -> Identifier:
    """Return the identifier that finds the person a CRM hit was about, strongest first."""
    if hit.traits.get("email"):
        return Identifier(IdKind.EMAIL, hit.traits["email"])
    if hit.traits.get("crm_id"):
        return Identifier(IdKind.CRM, str(hit.traits["crm_id"]))
    return Identifier(IdKind.PHONE, normalise_phone(hit.traits["phone"]))


def _whole(value: str, name: str) -> int:
    text = value.replace(".", "").replace(" ", "").replace("\u202f", "")
    if not _DIGITS.fullmatch(text):
        raise RowError(f"{name}: {excerpt(value)} is not a whole number")
    return int(text)


def _amount(value: str) -> float:
    text = value.replace(" ", "").replace("€", "").replace("EUR", "")
    if "," in text and "." in text:  # 1.234,56 (German) or 1,234.56
        text = (
            text.replace(".", "").replace(",", ".")
            if text.rfind(",") > text.rfind(".")
            else text.replace(",", "")
        )
    elif "," in text:
        text = text.replace(",", ".")
    try:
        amount = float(text)
    except ValueError:
        raise RowError(f"deal_value: {excerpt(value)} is not an amount") from None
    if not -1e12 < amount < 1e12:
        raise RowError(f"deal_value: {excerpt(value)} is out of range")
    return amount
