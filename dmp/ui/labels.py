"""The UI's words for dmp's closed sets: tiers, stages, channels, consent categories,
identifier kinds and sources, in the page's language (one place for every page)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

LABELS = {
    "tier": {
        "unknown": _l("unknown"),
        "low": _l("low"),
        "medium": _l("medium"),
        "high": _l("high"),
    },
    "stage": {
        "lead": _l("Lead"),
        "mql": _l("MQL"),
        "sal": _l("SAL"),
        "sql": _l("SQL"),
        "won": _l("Won"),
        "lost": _l("Lost"),
        "recycled": _l("Recycled"),
    },
    "channel": {
        "retargeting": _l("Retargeting"),
        "email": _l("Email"),
        "phone": _l("Phone"),
        "postal": _l("Postal mail"),
    },
    "category": {
        "analytics": _l("Analytics"),
        "ads": _l("Advertising"),
        "email": _l("Newsletter"),
    },
    "kind": {
        "email": _l("Email"),
        "crm": _l("CRM id"),
        "user": _l("User id"),
        "phone": _l("Phone"),
        "ext": _l("Other id"),
        "anon": _l("Anonymous id"),
        "uid": _l("Cookie id"),
    },
    "source": {
        "pixel": _l("Pixel"),
        "tag": _l("Tag"),
        "api": _l("Server API"),
        "crm": _l("CRM"),
        "newsletter": _l("Newsletter tool"),
        "model": _l("Scoring model"),
    },
    "rule": {"fit": _l("Fit"), "activity": _l("Activity"), "": _l("Earlier model")},
}


def label(group: str, value: str | None) -> str:
    """Return the page language's word for ``value`` of a closed set (the value if none)."""
    if value is None:
        return "–"
    found = LABELS.get(group, {}).get(value)
    return str(found) if found is not None else value
