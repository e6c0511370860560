"""The segment builder's words: what each kind of condition, operator and value is called
on the page (the definition keeps the language's own names)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

KINDS = {
    "all": _l("All of these"),
    "any": _l("Any of these"),
    "not": _l("None of these"),
    "tier": _l("Involvement tier"),
    "stage": _l("Lifecycle stage"),
    "number": _l("Score or count"),
    "interest": _l("Interest in a topic"),
    "channel": _l("Reachable on channel"),
    "text": _l("Profile field"),
    "trait": _l("Trait"),
    "did": _l("Did something"),
    "raw": _l("Written in YAML"),
}
OPS = {
    "gte": _l("at least"),
    "gt": _l("more than"),
    "lte": _l("at most"),
    "lt": _l("less than"),
    "eq": _l("is"),
    "ne": _l("is not"),
    "in": _l("is one of"),
    "not_in": _l("is none of"),
    "contains": _l("contains"),
    "matches": _l("matches (regular expression)"),
    "exists": _l("is known"),
    "missing": _l("is missing"),
    "count_gte": _l("at least"),
    "count_gt": _l("more than"),
    "count_lte": _l("at most"),
    "count_lt": _l("fewer than"),
    "count_eq": _l("exactly"),
}
VALUES = {
    "unknown": _l("unknown"),
    "low": _l("low"),
    "medium": _l("medium"),
    "high": _l("high"),
    "won": _l("won"),
    "lost": _l("lost"),
    "recycled": _l("recycled"),
    "retargeting": _l("Retargeting"),
    "email": _l("Email"),
    "phone": _l("Phone"),
    "postal": _l("Post"),
    "score": _l("Score"),
    "fit_score": _l("Fit score"),
    "activity_score": _l("Activity score"),
    "touchpoints_total": _l("Touchpoints, all time"),
    "touchpoints_7d": _l("Touchpoints, last 7 days"),
    "touchpoints_30d": _l("Touchpoints, last 30 days"),
    "touchpoints_90d": _l("Touchpoints, last 90 days"),
    "days_since_last_touch": _l("Days since the last touchpoint"),
    "company": _l("Company"),
    "job_title": _l("Job title"),
    "industry": _l("Industry"),
    "country": _l("Country"),
    "top_interest": _l("Top interest"),
    "last_channel": _l("Last channel"),
    "next_content": _l("Next content"),
}


def label(name: str) -> str:
    """Return what the page calls a kind, operator or value (stages as MQL, SAL …)."""
    found = KINDS.get(name) or OPS.get(name) or VALUES.get(name)
    if found is not None:
        return str(found)
    return name.upper() if name in ("lead", "mql", "sal", "sql") else name
