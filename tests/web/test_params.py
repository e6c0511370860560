"""The raw query reader of the paths served before Flask (the pixel, the lookup)."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmp.web.params import MAX_QUERY_FIELDS, BadQuery, query_args


def reference(query: str) -> dict[str, str]:
    """What the standard library reads: parse_qsl's pairs, the first value of a name."""
    if not query.isascii():
        query = query.encode("latin-1", "replace").decode("utf-8", "replace")
    args: dict[str, str] = {}
    for name, value in parse_qsl(query, errors="replace", max_num_fields=MAX_QUERY_FIELDS):
        args.setdefault(name, value)
    return args


# Queries made of the characters that matter (separators, escapes, '+', bad escapes, UTF-8
# as WSGI hands it over in latin-1) and of anything at all.
PIECES = st.sampled_from(["&", "=", "+", "%", "%2", "%20", "%41", "%C3%BC", "%ZZ", "%e4", "a"])
LATIN1 = st.text(st.characters(max_codepoint=255), max_size=30)
queries = st.one_of(st.lists(PIECES, max_size=40).map("".join), LATIN1)


@settings(max_examples=500, deadline=None)
@given(queries)
def test_the_query_reader_reads_what_parse_qsl_reads(query):
    """Every query under the field limit reads as parse_qsl reads it, first value of a name
    kept: blank values and names without '=' left out, '+' a space, escapes decoded, bad
    escapes as they are, bad UTF-8 replaced."""
    if query.count("&") >= MAX_QUERY_FIELDS:
        return
    assert query_args(query) == reference(query)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("k=a&url=https%3A%2F%2Facme.de%2F&k=b", {"k": "a", "url": "https://acme.de/"}),
        ("a=&b&=c&d==e", {"": "c", "d": "=e"}),
        ("t=Preise+%26+Pl%C3%A4ne&%6B=x&k=y", {"t": "Preise & Pläne", "k": "x"}),
        ("u=%ZZ%2&v=Ã¼", {"u": "%ZZ%2", "v": "ü"}),
    ],
)
def test_the_query_reader_on_examples(query, expected):
    """Repeats keep the first (after decoding the name), escapes and UTF-8 as sent."""
    assert query_args(query) == expected


def test_too_many_parameters_are_refused():
    """Past the field limit the query is refused as parse_qsl would refuse it."""
    query_args("&".join(["a=1"] * MAX_QUERY_FIELDS))
    with pytest.raises(BadQuery):
        query_args("&".join(["a=1"] * (MAX_QUERY_FIELDS + 1)))
    with pytest.raises(ValueError):
        reference("&".join(["a=1"] * (MAX_QUERY_FIELDS + 1)))
