"""Consent rules: the page's word, the browser's signals and Segment's convention."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collectors.consent import (
    CATEGORIES,
    apply_browser_signals,
    consent_version,
    map_segment_consent,
    parse_granted,
    version_of,
)
from collectors.tcstring import proof_of

# A TC string @iabtcf/core encoded for CMP 300 (tests/collectors/tcf/make_vectors.mjs)
TC = json.loads((Path(__file__).parent / "tcf" / "vectors.json").read_text())["vectors"][0]

ALL = {"analytics": True, "ads": True, "email": True}


def test_categories_are_dmps_three():
    """dmp acts on exactly analytics, ads and email."""
    assert CATEGORIES == {"analytics", "ads", "email"}


@pytest.mark.parametrize(
    ("text", "granted"),
    [
        ("", set()),
        ("analytics", {"analytics"}),
        ("ads", {"ads"}),
        (" Analytics , ADS,email,bogus", {"analytics", "ads", "email"}),
        ("analytics,analytics", {"analytics"}),
        (",,,", set()),
        ("analytics;ads", set()),  # only commas separate
        ("all", set()),  # no wildcard: every category is named
        ("\ufffd,email", {"email"}),
        ("analytics" * 1000, set()),
    ],
)
def test_parse_granted(text, granted):
    """A comma list grants the named categories and refuses every other one."""
    consent = parse_granted(text)
    assert set(consent) == CATEGORIES
    assert {c for c, g in consent.items() if g} == granted


@pytest.mark.parametrize(
    ("headers", "ads"),
    [
        ({}, True),
        ({"Sec-GPC": "1"}, False),
        ({"DNT": "1"}, False),
        ({"Sec-GPC": " 1 "}, False),
        ({"Sec-GPC": "1", "DNT": "0"}, False),
        ({"DNT": "0"}, True),
        ({"Sec-GPC": "0"}, True),
        ({"Sec-GPC": "", "DNT": ""}, True),
        ({"Sec-GPC": "true"}, True),  # the spec's only opt-out value is "1"
    ],
)
def test_browser_signals_withhold_ads(headers, ads):
    """Sec-GPC: 1 and DNT: 1 withhold ads and nothing else."""
    assert apply_browser_signals(dict(ALL), headers) == {**ALL, "ads": ads}


def test_browser_signals_never_grant():
    """Without a signal the page's refusals stand; the input mapping is not changed."""
    refused = {"analytics": False, "ads": False, "email": False}
    assert apply_browser_signals(refused, {}) == refused
    page = dict(ALL)
    apply_browser_signals(page, {"Sec-GPC": "1"})
    assert page == ALL


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ({}, {}),
        ({"consent": "yes"}, {}),
        ({"consent": None}, {}),
        ({"consent": {}}, {}),
        ({"consent": {"categoryPreferences": None}}, {}),
        ({"consent": {"categoryPreferences": ["Advertising"]}}, {}),
        ({"consent": {"categoryPreferences": {"Advertising": True}}}, {"ads": True}),
        (
            {"consent": {"categoryPreferences": {"Advertising": True, "Analytics": True}}},
            {"ads": True, "analytics": True},
        ),
        ({"consent": {"categoryPreferences": {"Analytics": False}}}, {"analytics": False}),
        (
            {"consent": {"categoryPreferences": {"C0002": True, "C0004": False, "Other": True}}},
            {"analytics": True, "ads": False},
        ),
        (
            {"consent": {"categoryPreferences": {"Marketing": True, "Targeting": False}}},
            {"ads": False},  # any refusal among mapped categories wins
        ),
        (
            {"consent": {"categoryPreferences": {"Targeting": False, "Marketing": True}}},
            {"ads": False},  # whatever the order
        ),
        (
            {"consent": {"categoryPreferences": {"Email Marketing": True, "newsletter": True}}},
            {"email": True},
        ),
        ({"consent": {"categoryPreferences": {"e-mail": True}}}, {"email": True}),
        ({"consent": {"categoryPreferences": {"Newsletter": "true"}}}, {}),  # not a boolean
        ({"consent": {"categoryPreferences": {"Analytics": 1}}}, {}),
        ({"consent": {"categoryPreferences": {"Functional": True, "Necessary": True}}}, {}),
    ],
)
def test_segment_category_preferences(context, expected):
    """Segment's categoryPreferences map onto dmp's categories; absent means nothing granted."""
    assert map_segment_consent(context) == expected


@pytest.mark.parametrize(
    ("text", "tc_string", "expected"),
    [
        ("2026-03", "", "2026-03"),
        ("2026-03", TC["string"], "2026-03"),  # the site's own text version wins
        ("", TC["string"], proof_of(TC["string"])),
        ("bad version!", TC["string"], proof_of(TC["string"])),
        ("x" * 33, "", ""),
        (None, None, ""),
        (7, 7, ""),
        ("", "", ""),
        ("", "not a tc string", proof_of("not a tc string")),
    ],
)
def test_version_of(text, tc_string, expected):
    """The proof keeps the consent text version, else the TC string's proof, else nothing."""
    assert version_of(text, tc_string) == expected


def test_a_tc_strings_proof_names_its_cmp_and_hashes_the_string():
    """The proof of a TC string is tcf:<CMP id>:<32 hex of its SHA-256>, never the string;
    an undecodable one says tcf:invalid."""
    proof = version_of("", TC["string"])
    assert proof.startswith(f"tcf:{TC['expected']['cmp_id']}:") and TC["string"] not in proof
    assert len(proof.rsplit(":", 1)[1]) == 32
    assert version_of("", "CQhD!").startswith("tcf:invalid:")


def test_segment_tc_string_proof_carries_the_cmp_id():
    """Segment's context.consent.tcString is kept as the same proof as the pixel's."""
    context = {"consent": {"tcString": TC["string"]}}
    assert consent_version(context) == proof_of(TC["string"])
    assert consent_version(context).startswith("tcf:300:")
    assert consent_version({"consent": {"version": "v7", "tcString": TC["string"]}}) == "v7"
    assert consent_version({"consent": {"tcString": 5}}) == "" == consent_version({})
