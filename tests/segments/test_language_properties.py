"""Properties of the segment language, tried on generated trees (hypothesis): printing a
tree and parsing the text gives the same tree, and the polars evaluation (and the DuckDB
one) selects exactly the persons a plain Python reading of docs/segments.md selects, on
small matrices with nulls."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from segments.evaluator import evaluate, profile_of
from segments.language import (
    CHANNELS,
    COUNT_OPS,
    NUMBER_FIELDS,
    ORDERED,
    TEXT_FIELDS,
    All,
    AnyOf,
    Compare,
    Did,
    Interest,
    Node,
    Not,
    Reachable,
    Then,
    TraitTest,
    format_rule,
    parse_rule,
    parse_where,
    rule_data,
)
from segments.matrix import PERSON_SCHEMA, PROFILE_TRAITS, TOUCHPOINT_SCHEMA, build_matrix
from segments.rules import LIST_OPS, MAX_NUMBER, NUMERIC_OPS, Attr, Condition, Op, When
from segments.scoring import DAY_MS, default_model_text, parse_model
from segments.sql import segments_sql
from segments.stages import STAGE_HISTORY_SCHEMA
from segments.yamltext import dump_yaml, load_yaml_documents

NOW = 1_763_900_000_000
SETTINGS = settings(max_examples=200, deadline=None, database=None)
DOC = Path(__file__).resolve().parents[2] / "docs" / "segments.md"

# --- trees ---------------------------------------------------------------------------------

# The touchpoint filter's keys (docs/segments.md, "The touchpoint filter"): each one
# condition; a list for an eq key means in.
FILTER_KEYS = {
    "event": (Attr.EVENT, Op.EQ),
    "type": (Attr.TYPE, Op.EQ),
    "source": (Attr.SOURCE, Op.EQ),
    "channel": (Attr.CHANNEL, Op.EQ),
    "site": (Attr.SITE, Op.EQ),
    "url": (Attr.URL, Op.EQ),
    "url_contains": (Attr.URL, Op.CONTAINS),
    "url_matches": (Attr.URL, Op.MATCHES),
    "title_contains": (Attr.TITLE, Op.CONTAINS),
    "topic": (Attr.TOPIC, Op.EQ),
}
NUMBER_OPS = [Op.EQ, Op.NE, Op.GT, Op.GTE, Op.LT, Op.LTE, Op.IN, Op.NOT_IN]
PATTERNS = ["^De", "(?i)^de$", "a|b", "[0-9]", "^$", "arketing", r"\.", "x'y", '"', "ü"]


@dataclass(frozen=True)
class Values:
    """What trees compare with: any value the language takes (printing), or a few that
    the generated matrices hold too (evaluation, so that conditions hold now and then)."""

    texts: st.SearchStrategy[str]
    numbers: st.SearchStrategy[int | float]
    names: st.SearchStrategy[str]
    days: st.SearchStrategy[float]
    shares: st.SearchStrategy[float]
    keys: int  # at most this many keys in a touchpoint filter (besides a property)

    @property
    def scalars(self) -> st.SearchStrategy[str | int | float]:
        """Text or a number."""
        return st.one_of(self.texts, self.numbers)

    @property
    def patterns(self) -> st.SearchStrategy[str]:
        """A regular expression Python's re and Rust's regex read alike."""
        return st.one_of(st.sampled_from(PATTERNS), st.from_regex(r"\A\w{0,6}\Z"))


WORDS = ["DE", "de", "AT", "5", "5.0", "-0", "2.5", "1e3", "nan", "inf", "", " 7", "1_000"]
WORDS += ["Head of Marketing", "x'y", 'a "b"', "ü", "pdf", "crm", "https://acme.de/pricing"]
YAMLISH = ["yes", "No", "null", "~", "true", "2024-01-01", "1:20", "#x", "a: b", "- x", "0x1F"]
ANY = Values(
    texts=st.one_of(
        st.sampled_from(WORDS + YAMLISH), st.text(st.characters(exclude_categories=["Cs"]))
    ),
    numbers=st.one_of(
        st.integers(-MAX_NUMBER, MAX_NUMBER),
        st.floats(-MAX_NUMBER, MAX_NUMBER, allow_nan=False),
    ),
    names=st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.\-]{0,20}\Z"),
    days=st.floats(0, 3650, exclude_min=True),
    shares=st.floats(0, 1),
    keys=3,
)
# Evaluation: text that reads as a number in some way or none, and numbers it equals.
FEW_WORDS = ["DE", "de", "5", "5.0", "-0", "1e3", "nan", "inf", "", " 7", "x'y", "ü"]
NAMES = ["country", "a.b", "0"]
DAYS = [0.5, 1.0, 7.0, 1 / 3, 0.123456789]  # 0.123456789 days: 10666666.57 ms
FEW = Values(
    texts=st.sampled_from(FEW_WORDS),
    numbers=st.sampled_from([0, 5, -0.5, 1000]),
    names=st.sampled_from(NAMES),
    days=st.sampled_from(DAYS),
    shares=st.sampled_from([0.0, 0.2, 0.5, 1.0]),
    keys=2,
)


def operations(v: Values) -> st.SearchStrategy[tuple[Op, Any]]:
    """An operator with a value it takes (every operator of text columns and traits)."""
    value = {
        Op.EQ: v.scalars,
        Op.NE: v.scalars,
        Op.IN: st.lists(v.scalars, min_size=1, max_size=3),
        Op.NOT_IN: st.lists(v.scalars, min_size=1, max_size=3),
        Op.CONTAINS: v.texts.filter(bool),
        Op.MATCHES: v.patterns,
        Op.EXISTS: st.booleans(),
        **{op: v.numbers for op in NUMERIC_OPS},
    }
    return st.sampled_from(list(Op)).flatmap(lambda op: st.tuples(st.just(op), value[op]))


def compares(v: Values) -> st.SearchStrategy[Compare]:
    """A matrix column compared with a value of its kind."""
    number_ops = [op for op in NUMBER_OPS if op not in LIST_OPS]

    def ordered(field: str) -> st.SearchStrategy[Compare]:
        each = st.sampled_from(ORDERED[field])
        listed = st.tuples(st.sampled_from(sorted(LIST_OPS)), st.lists(each, min_size=1))
        return st.one_of(st.tuples(st.sampled_from(number_ops), each), listed).map(
            lambda o: Compare(field, *o)
        )

    def number(field: str) -> st.SearchStrategy[Compare]:
        listed = st.lists(v.numbers, min_size=1, max_size=3)
        pairs = st.one_of(
            st.tuples(st.sampled_from(number_ops), v.numbers),
            st.tuples(st.sampled_from(sorted(LIST_OPS)), listed),
        )
        return pairs.map(lambda o: Compare(field, *o))

    return st.one_of(
        st.sampled_from(sorted(ORDERED)).flatmap(ordered),
        st.sampled_from(NUMBER_FIELDS).flatmap(number),
        st.tuples(st.sampled_from(TEXT_FIELDS), operations(v)).map(lambda f: Compare(f[0], *f[1])),
    )


@st.composite
def filters(draw, v: Values) -> When:
    """A touchpoint filter: a few keys, and perhaps one property with its operators."""
    conditions = []
    for key in draw(st.lists(st.sampled_from(sorted(FILTER_KEYS)), unique=True, max_size=v.keys)):
        attr, op = FILTER_KEYS[key]
        if op is Op.EQ and draw(st.booleans()):
            op, value = Op.IN, draw(st.lists(v.scalars, min_size=1, max_size=3))
        else:
            value = draw({Op.EQ: v.scalars, Op.CONTAINS: v.texts.filter(bool)}.get(op, v.patterns))
        conditions.append(Condition(attr, op, value))
    if draw(st.booleans()):
        name = draw(v.names)
        ops = draw(st.lists(operations(v), min_size=1, max_size=2, unique_by=lambda o: o[0]))
        named = [Condition(Attr.PROPERTY, op, value, name) for op, value in ops]
        at = draw(st.integers(0, len(conditions)))
        conditions[at:at] = named
    return When(tuple(conditions))


def steps(v: Values, depth: int) -> st.SearchStrategy[Then | None]:
    """A sequence's later steps (None: no step)."""
    if depth == 0:
        return st.none()
    step = st.builds(Then, filters(v), st.none() | v.days, steps(v, depth - 1))
    return st.none() | step


def dids(v: Values) -> st.SearchStrategy[Did]:
    """A ``did``: a filter, a window, a count and perhaps later steps."""
    counts = st.tuples(st.sampled_from(sorted(COUNT_OPS.values())), st.integers(0, 3))
    counts = st.one_of(st.just((Op.GTE, 1)), counts)
    return st.builds(
        lambda when, within, count, then: Did(when, within, *count, then),
        filters(v),
        st.none() | v.days,
        counts,
        steps(v, 2),
    )


def trees(v: Values) -> st.SearchStrategy[Node]:
    """A ``where`` tree of any condition, nested in all, any and not."""
    interest = st.builds(
        Interest, v.texts, st.sampled_from(sorted(NUMERIC_OPS)), v.shares.map(float)
    )
    trait = st.builds(
        lambda name, o: TraitTest(Condition(Attr.TRAIT, o[0], o[1], name)),
        v.names,
        operations(v),
    )
    leaves = st.one_of(
        compares(v), interest, st.sampled_from(CHANNELS).map(Reachable), trait, dids(v)
    )
    return st.recursive(
        leaves,
        lambda kids: st.one_of(
            st.lists(kids, min_size=1, max_size=3).map(lambda p: All(tuple(p))),
            st.lists(kids, min_size=1, max_size=3).map(lambda p: AnyOf(tuple(p))),
            kids.map(Not),
        ),
        max_leaves=6,
    )


# --- parse, print, parse -------------------------------------------------------------------


@SETTINGS
@given(trees(ANY))
@example(Compare("company", Op.EQ, "a\x85b"))  # PyYAML wrote U+0085 raw: read back as a space
@example(Compare("company", Op.EQ, "1e3"))  # text the loader would read as a number unquoted
def test_printing_a_tree_and_parsing_the_text_gives_the_tree(tree: Node) -> None:
    """format_rule's text parses back to an equal tree (of equal repr: did columns are
    named after it), and printing that tree again gives the same text."""
    text = format_rule(tree)
    again = parse_rule(text)
    assert again == tree, text
    assert repr(again) == repr(tree)
    assert format_rule(again) == text


@st.composite
def written(draw, data: Any, key: str = "") -> Any:
    """Another way to write the canonical mapping ``data`` that the language reads alike:
    a bare value for eq, a trait's name alone, a property's operators beside it, the
    default count written out, whole days as floats."""
    if isinstance(data, list):
        return [draw(written(d)) for d in data]
    if key in ("did", "then"):
        return draw(steps_written(data, key))
    (field, value), *_ = data.items()
    if field in (*ORDERED, *NUMBER_FIELDS, *TEXT_FIELDS) and "eq" in value:
        bare = not isinstance(value["eq"], list) and draw(st.booleans())
        return {field: value["eq"] if bare else value}
    if field == "trait" and value.keys() == {"name", "exists"} and value["exists"]:
        return {"trait": value["name"] if draw(st.booleans()) else value}
    if field in ("all", "any", "not", "did"):
        return {field: draw(written(value, field))}
    return data


@st.composite
def steps_written(draw, data: dict[str, Any], key: str) -> dict[str, Any]:
    """Another way to write a ``did`` or a ``then`` step's mapping."""
    out = dict(data)
    if "then" in out:
        out["then"] = draw(written(out["then"], "then"))
    if isinstance(out.get("within_days"), int) and draw(st.booleans()):
        out["within_days"] = float(out["within_days"])
    if key == "did" and not set(out) & set(COUNT_OPS) and draw(st.booleans()):
        out["count_gte"] = 1
    if "property" in out and draw(st.booleans()):
        named = out["property"]
        out["property"] = named["name"]
        out |= {k: v for k, v in named.items() if k != "name"}
    return out


# What JSON allows raw in a string and a YAML 1.1 reader does not: control characters it
# refuses ("not valid YAML (character #x0097 ...)"), and U+0085, U+2028 and U+2029, which
# it reads as line breaks (folded into a space). Only escaped, as json.dumps writes them
# by default, does such a .json file read right.
NOT_YAML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ufffe\uffff]")


def texts_of(data: Any) -> list[str]:
    """The data as block YAML, flow YAML and JSON text (escaped, and raw where YAML can)."""
    texts = [
        dump_yaml(data),
        dump_yaml(data, flow=True),
        json.dumps(data),
    ]
    raw = json.dumps(data, ensure_ascii=False)
    return texts if NOT_YAML.search(raw) else [*texts, raw]


@SETTINGS
@given(st.data(), trees(ANY))
def test_any_written_form_parses_to_what_its_canonical_text_parses_to(data, tree) -> None:
    """However a tree is written (the shorthands the language allows, as YAML or JSON),
    the text parses to the tree its data gives, and printing and parsing that tree
    changes nothing: parse(print(parse(text))) == parse(text)."""
    source = data.draw(written(rule_data(tree)))
    assert parse_where(source) == tree
    for text in texts_of(source):
        parsed = parse_rule(text)
        assert parsed == tree, text
        assert parse_rule(format_rule(parsed)) == parsed


def _doc_wheres() -> list[Any]:
    fence = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)
    blocks = fence.findall(DOC.read_text(encoding="utf-8"))
    found = [d for b in blocks for d in load_yaml_documents(b, "docs") if d is not None]
    return [item["where"] for d in found for item in (d if isinstance(d, list) else [d])]


@pytest.mark.parametrize("where", _doc_wheres())
def test_every_documented_example_prints_and_parses_back(where) -> None:
    """Each ``where`` of docs/segments.md, printed, parses to the tree it parsed to."""
    tree = parse_where(where)
    assert parse_rule(format_rule(tree)) == tree


def test_json_text_reads_as_json_means_it() -> None:
    """A .json file reads as its JSON: a number with an exponent and no dot is a number
    (PyYAML's YAML 1.1 read "1e-05" as text: "expected a number"), and a character
    json.dumps escapes as a surrogate pair is that character (not two halves)."""
    shares = parse_rule(json.dumps({"interest": {"topic": "crm", "gte": 1e-05}}))
    assert shares == Interest("crm", Op.GTE, 1e-05)
    rocket = parse_rule(json.dumps({"company": {"contains": "🚀 GmbH"}}))
    assert rocket == Compare("company", Op.CONTAINS, "🚀 GmbH")
    assert parse_rule("trait: {name: revenue, eq: 2E6}").condition.value == 2e6


def test_the_printed_text_reads_like_the_documentation() -> None:
    """Block style for all/any/not, one condition a line, strings quoted only when YAML
    would read them otherwise."""
    tree = parse_where(
        {
            "all": [
                {"tier": {"gte": "medium"}},
                {"not": {"did": {"event": "page", "url_contains": "/careers"}}},
                {"any": [{"trait": "crm_id"}, {"country": {"in": ["NO", "1e3", "x: y"]}}]},
            ]
        }
    )
    assert format_rule(tree) == (
        "all:\n"
        "  - tier: {gte: medium}\n"
        "  - not:\n"
        "      did: {event: page, url_contains: /careers}\n"
        "  - any:\n"
        "      - trait: {name: crm_id, exists: true}\n"
        "      - country: {in: ['NO', '1e3', 'x: y']}\n"
    )


# --- evaluation ----------------------------------------------------------------------------


def _matrix_schema() -> dict[str, pl.DataType]:
    """The matrix's real column types: those of a build of nobody."""
    model = parse_model(default_model_text())
    empty = [pl.LazyFrame(schema=s) for s in (PERSON_SCHEMA, TOUCHPOINT_SCHEMA)]
    history = pl.LazyFrame(schema=STAGE_HISTORY_SCHEMA)
    rows, _ = build_matrix(*empty, history, model, (), NOW)
    return dict(rows.collect_schema())


SCHEMA = _matrix_schema()
READ = ["person_id", *ORDERED, *NUMBER_FIELDS, *TEXT_FIELDS, "traits", "interests", "channels"]
PROFILE = [c for c in READ if c in PROFILE_TRAITS]  # a row's traits as columns of their own
# Touchpoints this long before NOW: at the edges of the windows of DAYS, and after NOW.
AGES = sorted({int(d * DAY_MS) + k for d in DAYS for k in (-1, 0, 1)} | {0, -1, -DAY_MS})


def maybe(values: st.SearchStrategy) -> st.SearchStrategy:
    """The values, or null one time in three."""
    return st.one_of(st.none(), values, values)


texts = FEW.texts
json_values = st.one_of(st.none(), st.booleans(), texts, st.sampled_from([0, 5, 5.0, -0.5, 1000]))
# JSON objects, as dmp writes traits and properties (segments.compiler's frame convention)
json_objects = maybe(
    st.dictionaries(st.sampled_from(NAMES), json_values, max_size=3).map(json.dumps)
)
floats = st.sampled_from([0.0, -0.0, 5.0, -0.5, 1000.0, 2.5])
columns = {
    "tier": st.sampled_from(ORDERED["tier"]),
    "stage": st.sampled_from(ORDERED["stage"]),
    "channels": st.lists(st.sampled_from(CHANNELS), unique=True),
    "interests": st.lists(
        st.fixed_dictionaries({"topic": texts, "weight": FEW.shares}),
        unique_by=lambda i: i["topic"],
        max_size=3,
    ),
    **{f: st.sampled_from([0, 1, 5]) if SCHEMA[f] == pl.UInt32 else floats for f in NUMBER_FIELDS},
    **{f: texts for f in TEXT_FIELDS},
}
rows = st.fixed_dictionaries({c: maybe(s) for c, s in columns.items()} | {"traits": json_objects})
touches = st.fixed_dictionaries(
    {
        "age": st.sampled_from(AGES),
        **{c: maybe(texts) for c in ("event", "type", "source", "channel", "site_id")},
        **{c: maybe(texts) for c in ("url", "title")},
        "topics": maybe(st.lists(maybe(texts), max_size=3)),
        "properties": json_objects,
    }
)


@st.composite
def people(draw) -> tuple[list[dict], list[dict]]:
    """A few matrix rows (every column the language reads, nulls included) and their
    touchpoints."""
    found = draw(st.lists(rows, min_size=1, max_size=4))
    matrix = [with_profile({**row, "person_id": f"p{i}"}) for i, row in enumerate(found)]
    tps = []
    for person in matrix:
        for touch in draw(st.lists(touches, max_size=4)):
            age = touch.pop("age")
            tps.append({**touch, "person_id": person["person_id"], "timestamp": NOW - age})
    return matrix, tps


def with_profile(row: dict) -> dict:
    """The row with its profile traits' columns as a matrix row holds them: the values
    of its traits (which a trait test may read instead of the JSON)."""
    return row | {name: json_value(row["traits"], name) for name in PROFILE}


def frames(matrix: list[dict], tps: list[dict]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The rows and touchpoints as frames of the real types."""
    schema = {c: SCHEMA[c] for c in READ}
    return pl.DataFrame(matrix, schema=schema), pl.DataFrame(tps, schema=TOUCHPOINT_SCHEMA)


# The reference: docs/segments.md read plainly, over row dicts.

A_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?|[+-]?inf(inity)?", re.I)


def as_number(value: Any) -> float | None:
    """A value read as a number (None: it is none; NaN is not a number either)."""
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and A_NUMBER.fullmatch(value):
        number = float(value)
    else:
        return None
    return None if math.isnan(number) else number


def equal(value: Any, target: Any) -> bool:
    """Whether a value equals a target: a number target compares as a number (a value
    that reads as none equals none), a text one as text."""
    if isinstance(target, int | float):
        return as_number(value) == target
    return value == target


def holds(op: Op, target: Any, value: Any) -> bool:
    """Whether ``value op target`` holds. A missing value (None) holds nothing but
    ``exists: false``; a present one holds ne where it does not hold eq, not_in where it
    does not hold in, and in where it holds eq with one of the items."""
    if op is Op.EXISTS:
        return (value is not None and value != "") is target
    if value is None:
        return False
    if op is Op.CONTAINS:
        return target in value
    if op is Op.MATCHES:
        return re.search(target, value) is not None
    if op in (Op.EQ, Op.NE):
        return equal(value, target) is (op is Op.EQ)
    if op in LIST_OPS:
        return any(equal(value, item) for item in target) is (op is Op.IN)
    number = as_number(value)
    if number is None:
        return False
    return {Op.GT: number > target, Op.GTE: number >= target, Op.LT: number < target}.get(
        op, number <= target
    )


def json_value(document: str | None, name: str) -> str | None:
    """A trait's or property's value as text (JSON's true for true), None when missing."""
    try:
        found = json.loads(document) if document is not None else None
    except ValueError:
        return None
    value = found.get(name) if isinstance(found, dict) else None
    if isinstance(value, bool):
        return json.dumps(value)
    return None if value is None else str(value)


TOUCH_COLUMNS = {Attr.SITE: "site_id"}


def touch_holds(c: Condition, touch: dict) -> bool:
    """Whether one condition of a touchpoint filter holds for a touchpoint."""
    if c.attr is Attr.TOPIC:
        return any(holds(c.op, c.value, topic) for topic in touch["topics"] or [])
    if c.attr is Attr.PROPERTY:
        return holds(c.op, c.value, json_value(touch["properties"], c.name))
    return holds(c.op, c.value, touch[TOUCH_COLUMNS.get(c.attr, c.attr.value)])


def count(did: Did, tps: list[dict]) -> int:
    """How many of a person's touchpoints a ``did`` counts (a sequence: its last steps)."""
    past = [t for t in tps if t["timestamp"] <= NOW]
    steps = [t for t in past if all(touch_holds(c, t) for c in did.filter.conditions)]
    step = did.then
    while step is not None:
        gap = math.inf if step.within_days is None else step.within_days * DAY_MS
        steps = [
            t
            for t in past
            if all(touch_holds(c, t) for c in step.filter.conditions)
            and any(0 < t["timestamp"] - s["timestamp"] <= gap for s in steps)
        ]
        step = step.then
    if did.within_days is not None:
        steps = [t for t in steps if t["timestamp"] > NOW - did.within_days * DAY_MS]
    return len(steps)


def selects(node: Node, row: dict, tps: list[dict]) -> bool:
    """Whether a tree holds for a person (their row and their touchpoints)."""
    if isinstance(node, All | AnyOf):
        answers = [selects(p, row, tps) for p in node.parts]
        return all(answers) if isinstance(node, All) else any(answers)
    if isinstance(node, Not):
        return not selects(node.part, row, tps)
    if isinstance(node, Compare) and node.field in ORDERED:
        order = ORDERED[node.field]
        rank = order.index(row[node.field]) if row[node.field] in order else None
        listed = node.op in LIST_OPS
        target = [order.index(v) for v in node.value] if listed else order.index(node.value)
        return holds(node.op, target, rank)
    if isinstance(node, Compare):
        return holds(node.op, node.value, row[node.field])
    if isinstance(node, Interest):
        weights = [i["weight"] for i in row["interests"] or [] if i["topic"] == node.topic]
        weight = weights[0] if weights and weights[0] is not None else 0.0
        return holds(node.op, node.value, weight)
    if isinstance(node, Reachable):
        return node.channel in (row["channels"] or [])
    if isinstance(node, TraitTest):
        c = node.condition
        return holds(c.op, c.value, json_value(row["traits"], c.name))
    return holds(node.op, node.count, count(node, tps))


def expected_members(segments: dict[str, Node], matrix: list[dict], tps: list[dict]) -> dict:
    """Who each segment selects, by the reference."""
    return {
        sid: sorted(
            r["person_id"]
            for r in matrix
            if selects(tree, r, [t for t in tps if t["person_id"] == r["person_id"]])
        )
        for sid, tree in segments.items()
    }


def members_of(flags: pl.DataFrame, segments: dict[str, Node]) -> dict[str, list[str]]:
    """Who each segment selects, from a table of person_id and one Boolean per segment."""
    for sid in segments:
        assert flags[sid].null_count() == 0, f"{sid}: a null membership"
    return {sid: sorted(flags.filter(pl.col(sid))["person_id"].to_list()) for sid in segments}


def person(pid: str = "p0", **columns: Any) -> dict:
    """A matrix row with nothing but ``columns`` (and its id; its profile traits' columns
    those of its traits unless given)."""
    return with_profile({c: None for c in READ} | {"person_id": pid} | columns) | columns


def touch(age: int, pid: str = "p0") -> dict:
    """A touchpoint ``age`` ms before NOW with nothing else."""
    return {c: None for c in TOUCHPOINT_SCHEMA} | {"person_id": pid, "timestamp": NOW - age}


WHOLE_MS = int(0.123456789 * DAY_MS)  # 10666666: inside a window of 10666666.57 ms
# Disagreements found, kept: each failed before its fix.
FOUND = [
    # "nan" read as NaN, which polars and DuckDB order above every number: gt 5 held
    ({"a": Compare("country", Op.GT, 5)}, ([person(country="nan")], [])),
    # in with a number and a text compared the number as text ("1e3" is not "1000")
    ({"a": Compare("company", Op.IN, [1000, "DE"])}, ([person(company="1e3")], [])),
    # ne held nowhere a value reads as no number, though "DE" differs from 5
    (
        {"a": TraitTest(Condition(Attr.TRAIT, Op.NE, 5, "country"))},
        ([person(traits='{"country": "DE"}')], []),
    ),
    # a sequence's window was cut to whole ms (a plain did's in SQL too)
    (
        {
            "a": Did(When(()), 0.123456789, Op.GTE, 1, Then(When(()), None)),
            "b": Did(When(()), 0.123456789, Op.GTE, 1),
        },
        ([person()], [touch(WHOLE_MS + 5), touch(WHOLE_MS)]),
    ),
    # DuckDB read " 7" and "1_000" as numbers, polars reads them as none
    (
        {"a": Compare("country", Op.GT, 5)},
        ([person(country=" 7"), person("p1", country="1_000")], []),
    ),
]


def found(test):
    """``test`` with every disagreement found pinned as an explicit example."""
    for segments, data in FOUND:
        test = example(segments, data)(test)
    return test


segment_sets = st.dictionaries(st.sampled_from(["a", "b", "c"]), trees(FEW), min_size=1, max_size=3)


@pytest.fixture(scope="module")
def db() -> Iterator[duckdb.DuckDBPyConnection]:
    """One DuckDB connection for the module (opening one takes longer than a query)."""
    with duckdb.connect() as connection:
        yield connection


def duckdb_flags(
    db: duckdb.DuckDBPyConnection,
    segments: dict[str, Node],
    rows: pl.DataFrame,
    touchpoints: pl.DataFrame,
) -> pl.DataFrame:
    """The SQL backend's table of members (DuckDB, as the matrix benchmark runs it)."""
    db.register("matrix", rows.to_arrow())
    db.register("touchpoints", touchpoints.to_arrow())
    sql = segments_sql(
        segments, NOW, matrix="matrix", touchpoints="touchpoints", profile=profile_of(rows.columns)
    )
    return db.sql(sql).pl()


@SETTINGS
@given(segment_sets, people())
@found
def test_both_backends_select_whom_the_documented_semantics_select(
    db: duckdb.DuckDBPyConnection, segments: dict[str, Node], data: tuple[list[dict], list[dict]]
) -> None:
    """On a small matrix with nulls, every segment (evaluated together, sharing did
    counts) selects exactly the persons a plain Python reading of the docs selects: in
    polars, and in DuckDB's SQL."""
    matrix, tps = data
    rows, touchpoints = frames(matrix, tps)
    expected = expected_members(segments, matrix, tps)
    flags = evaluate(rows.lazy(), touchpoints.lazy(), segments, NOW).collect()
    assert members_of(flags, segments) == expected, "polars"
    assert members_of(duckdb_flags(db, segments, rows, touchpoints), segments) == expected, "DuckDB"
