"""The rule cases both backends must answer alike (polars in test_rules, DuckDB in
test_sql): four touchpoints, four persons' traits, and which of them each rule selects."""

from __future__ import annotations

import polars as pl

TOUCHPOINTS = pl.DataFrame(
    {
        "event": ["page", "page", "whitepaper_download", "open"],
        "type": ["page", "page", "track", "track"],
        "source": ["pixel", "tag", "api", "newsletter"],
        "channel": ["web", "web", "web", "email"],
        "site_id": ["acme", "acme", "acme", None],
        "url": ["https://acme.de/pricing?x=1", "https://acme.de/blog", None, None],
        "title": ["Preise", None, None, None],
        "topics": [["crm"], [], ["crm", "ads"], None],
        "properties": [None, None, '{"format": "pdf", "pages": 12}', "{}"],
    },
    schema_overrides={"topics": pl.List(pl.Utf8)},
)
PERSONS = pl.DataFrame(
    {
        "traits": [
            '{"job_title": "Head of Marketing", "employees": 120, "country": "DE"}',
            '{"job_title": "CTO", "employees": "20"}',
            None,
            "{}",
        ]
    }
)

# Persons whose last touchpoints share a time, and the last channel each must get: the
# first by name, a missing channel before any (segments.personstate and sqlmatrix alike).
LAST_CHANNEL_TIES = (
    [("a", 5, "web"), ("a", 1, "web"), ("a", 1, "email"), ("a", 1, "crm"), ("b", 2, "email")]
    + [("b", 1, "web"), ("c", 1, "web"), ("c", 1, None), ("d", 3, "web"), ("d", 3, "crm")],
    {"a": "crm", "b": "web", "c": None, "d": "crm"},
)

# (touchpoint filter, which of TOUCHPOINTS it selects)
TOUCHPOINT_FILTERS = [
    ({"event": "page"}, [True, True, False, False]),
    ({"event": ["open", "whitepaper_download"]}, [False, False, True, True]),
    ({"event": "page", "url_contains": "/pricing"}, [True, False, False, False]),
    ({"url_matches": "(?i)^https://ACME\\.de/b"}, [False, True, False, False]),
    ({"title_contains": "Preis"}, [True, False, False, False]),
    ({"topic": "crm"}, [True, False, True, False]),
    ({"topic": ["ads", "seo"]}, [False, False, True, False]),
    ({"channel": "email", "source": "newsletter"}, [False, False, False, True]),
    ({"site": "acme", "type": "track"}, [False, False, True, False]),
    ({"property": "format", "eq": "pdf"}, [False, False, True, False]),
    ({"property": {"name": "pages", "gte": 10}}, [False, False, True, False]),
    ({"property": "format"}, [False, False, True, False]),
]

# (trait condition, which of PERSONS it selects)
TRAIT_CONDITIONS = [
    ({"trait": "job_title", "matches": "(?i)marketing|cmo"}, [True, False, False, False]),
    ({"trait": "employees", "gte": 50}, [True, False, False, False]),
    ({"trait": "employees", "lt": 50}, [False, True, False, False]),
    ({"trait": {"name": "employees", "in": [20, 120]}}, [True, True, False, False]),
    ({"trait": "country", "in": ["DE", "AT"]}, [True, False, False, False]),
    ({"trait": "country", "not_in": ["AT"]}, [True, False, False, False]),
    ({"trait": "country", "ne": "AT"}, [True, False, False, False]),
    ({"trait": "job_title", "eq": "CTO"}, [False, True, False, False]),
    ({"trait": "job_title", "contains": "Market"}, [True, False, False, False]),
    ({"trait": "country"}, [True, False, False, False]),
    ({"trait": "country", "exists": False}, [False, True, True, True]),
]

# Matrix rows whose stage or tier is outside the order, or missing, and segments over
# them: such a row meets neither ``in`` nor ``not_in`` (polars and SQL alike).
OUTSIDE_THE_ORDER_ROWS = {
    "m": {"tier": "medium", "stage": "mql"},
    "odd": {"tier": "huge", "stage": "archived"},
    "none": {"tier": None, "stage": None},
}
OUTSIDE_THE_ORDER = [
    ({"stage": {"not_in": ["lead"]}}, ["m"]),
    ({"stage": {"in": ["lead", "mql"]}}, ["m"]),
    ({"tier": {"not_in": ["low"]}}, ["m"]),
    ({"tier": {"in": ["medium", "high"]}}, ["m"]),
    ({"not": {"tier": {"in": ["medium", "high"]}}}, ["none", "odd"]),
]
