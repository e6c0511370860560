"""Which IAB TCF v2.2 purposes grant which of dmp's consent categories.

dmp runs as the site's own first-party tool, so the purposes the visitor consented to
in the site's CMP decide (and, when ``DMP_TCF_VENDOR_ID`` names dmp's operator as a
registered vendor, that vendor's consent as well). A rule is written as comma-separated
terms that must all hold, each term one purpose or alternatives joined by ``/``:

- ``DMP_TCF_ADS`` (default ``1,3,4``): store and access information on a device (1),
  create (3) and use (4) a personalised advertising profile, for retargeting audiences;
- ``DMP_TCF_ANALYTICS`` (default ``1,7/9``): purpose 1, and measuring advertising
  performance (7) or understanding audiences through statistics (9).

TCF has no purpose for newsletters: ``email`` consent never comes from a TC string.
The tag reads the same rules (:meth:`PurposeMap.for_tag`): one place for them.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from functools import lru_cache

from dmp.config import Config
from dmp.records import Category

PURPOSES = range(1, 12)  # TCF v2.2 defines purposes 1 to 11
DEFAULT_ADS = "1,3,4"
DEFAULT_ANALYTICS = "1,7/9"

Rule = tuple[frozenset[int], ...]  # every term must hold; a term holds if any purpose does


class RuleError(ValueError):
    """A purpose rule that is not terms of purpose numbers 1 to 11."""


def parse_rule(text: str) -> Rule:
    """Return the rule written as ``text`` (``"1,7/9"``), or raise RuleError saying why."""
    terms = []
    for term in text.split(","):
        purposes = set()
        for part in term.split("/"):
            part = part.strip()
            if not part.isdigit() or int(part) not in PURPOSES:
                raise RuleError(
                    f"{text!r}: {part!r} is no TCF purpose (1 to 11); write terms such as 1,7/9"
                )
            purposes.add(int(part))
        terms.append(frozenset(purposes))
    return tuple(terms)


def holds(rule: Rule, consented: Collection[int]) -> bool:
    """Return whether the purposes ``consented`` to satisfy ``rule``."""
    return all(term & set(consented) for term in rule)


@dataclass(frozen=True, slots=True)
class PurposeMap:
    """The rules of the categories a TC string can grant (``ads`` and ``analytics``)."""

    ads: Rule
    analytics: Rule
    vendor_id: int = 0  # 0: dmp is the publisher's own tool; no vendor consent needed

    @classmethod
    def of(cls, ads: str = DEFAULT_ADS, analytics: str = DEFAULT_ANALYTICS, vendor_id: int = 0):
        """Return the map of two rule texts (raises RuleError for a bad one)."""
        if vendor_id < 0:
            raise RuleError(f"the TCF vendor id must be 0 (none) or positive, not {vendor_id}")
        return cls(parse_rule(ads), parse_rule(analytics), vendor_id)

    def consent(self, purposes: Collection[int], vendor_consent: bool = True) -> dict[str, bool]:
        """Return every category's state for the purposes consented to (and whether the
        vendor, if one is configured, has consent)."""
        allowed = vendor_consent or not self.vendor_id
        granted = {
            Category.ADS.value: allowed and holds(self.ads, purposes),
            Category.ANALYTICS.value: allowed and holds(self.analytics, purposes),
        }
        return {c: granted.get(c, False) for c in sorted(c.value for c in Category)}

    def for_tag(self) -> str:
        """Return the rules as the JSON the tag script embeds."""
        rules = {
            "ads": [sorted(t) for t in self.ads],
            "analytics": [sorted(t) for t in self.analytics],
            "vendor": self.vendor_id,
        }
        return json.dumps(rules, separators=(",", ":"))


def of_config(config: Config) -> PurposeMap:
    """Return the purpose map of the settings (``DMP_TCF_ADS``, ``DMP_TCF_ANALYTICS``,
    ``DMP_TCF_VENDOR_ID``); raises RuleError for a bad rule (the app refuses to start)."""
    return _cached(config.tcf_ads, config.tcf_analytics, config.tcf_vendor_id)


@lru_cache(maxsize=8)
def _cached(ads: str, analytics: str, vendor_id: int) -> PurposeMap:
    return PurposeMap.of(ads, analytics, vendor_id)
