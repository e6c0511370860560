"""Consent: what a hit may do, from the page's word, the browser's signals and Segment's."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from collectors.tcfpurposes import PurposeMap
from collectors.tcstring import consent_of, proof_of
from dmp.records import Category

CATEGORIES = frozenset(c.value for c in Category)

# Segment's convention carries a consent manager's own category names in
# context.consent.categoryPreferences; these map the usual ones onto dmp's categories.
SEGMENT_CATEGORY_MAP: dict[str, str] = {
    "analytics": "analytics",
    "performance": "analytics",
    "statistics": "analytics",
    "measurement": "analytics",
    "c0002": "analytics",  # OneTrust: performance cookies
    "advertising": "ads",
    "ads": "ads",
    "marketing": "ads",
    "targeting": "ads",
    "c0004": "ads",  # OneTrust: targeting cookies
    "email": "email",
    "newsletter": "email",
    "emailmarketing": "email",
}
_SEPARATORS = re.compile(r"[\s_\-]+")  # "Email Marketing", "email_marketing", "e-mail"


def parse_granted(text: str) -> dict[str, bool]:
    """Return every category's state from a comma list of granted ones (unknown names ignored)."""
    granted = {part.strip().lower() for part in text.split(",") if part.strip()}
    return {c: c in granted for c in sorted(CATEGORIES)}


def apply_browser_signals(consent: dict[str, bool], headers: Mapping[str, str]) -> dict[str, bool]:
    """Return ``consent`` with ``ads`` withheld when the browser sends Sec-GPC: 1 or DNT: 1."""
    if headers.get("Sec-GPC", "").strip() == "1" or headers.get("DNT", "").strip() == "1":
        return {**consent, "ads": False}
    return consent


def map_segment_consent(context: Mapping[str, Any]) -> dict[str, bool]:
    """Return dmp's categories from ``context.consent.categoryPreferences``; {} when absent."""
    consent = context.get("consent")
    prefs = consent.get("categoryPreferences") if isinstance(consent, Mapping) else None
    if not isinstance(prefs, Mapping):
        return {}
    out: dict[str, bool] = {}
    for name, value in prefs.items():
        category = SEGMENT_CATEGORY_MAP.get(_SEPARATORS.sub("", str(name).lower()))
        if category is None or not isinstance(value, bool):
            continue
        # Several CMP categories can map onto one of ours: any refusal wins.
        out[category] = out.get(category, True) and value
    return out


_VERSION = re.compile(r"[A-Za-z0-9._:\-]{1,32}")


def version_of(text: Any, tc_string: Any = "") -> str:
    """Return what a consent's proof records of the text agreed to: the site's consent
    text version (``cv``, up to 32 letters, digits and ._:-), else the proof of the IAB TC
    string (``tcf:<CMP id>:<hash>``, see :func:`collectors.tcstring.proof_of`: the string
    itself is long and can be decoded to choices made elsewhere; the hash proves which one
    it was), else ''."""
    if isinstance(text, str) and _VERSION.fullmatch(text):
        return text
    if isinstance(tc_string, str) and tc_string:
        return proof_of(tc_string)
    return ""


def page_consent(
    granted: str, cv: Any, tc_string: str, gdpr: str, purposes: PurposeMap
) -> tuple[dict[str, bool], str]:
    """Return every category's state a browser hit's page gave, and its proof.

    Where GDPR applies (``gdpr`` "1", or a TC string and ``gdpr`` not "0") the IAB TC
    string alone decides, by the purpose rules ``purposes``, as the site's CMP recorded it
    (none without one, or with one that cannot be decoded). Otherwise the comma list
    ``granted`` does, under the consent text version ``cv``. The pixel and the tag both
    ask here.
    """
    if gdpr == "1" or (tc_string and gdpr != "0"):
        decided = consent_of(tc_string, purposes)
        return decided.consent, decided.version
    return parse_granted(granted), version_of(cv)


def consent_version(context: Mapping[str, Any]) -> str:
    """Return the consent version of a Segment message's context (``context.consent``'s
    ``version``, or its ``tcString`` hashed); '' when absent."""
    consent = context.get("consent")
    if not isinstance(consent, Mapping):
        return ""
    return version_of(consent.get("version"), consent.get("tcString", ""))
