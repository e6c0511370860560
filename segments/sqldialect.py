"""The spellings that differ between the SQL dialects :mod:`segments.sql` writes.

One emitter walks the typed AST and asks a :class:`Dialect` for the few constructs that
DuckDB and Spark SQL spell differently (list functions, JSON paths, quoting, ordered
aggregates); everything else is the SQL both read alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Engine(str, Enum):
    """The SQL engines the rules compile to."""

    DUCKDB = "duckdb"
    SPARK = "spark"


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one engine spells what the emitter needs (``{0}``, ``{1}``: the arguments)."""

    engine: Engine
    size: str  # length of a list
    list_filter: str  # {0} list, {1} variable, {2} test over it
    list_contains: str
    first_item: str  # the first item of a list, NULL for an empty one
    json_text: str  # {0} a JSON column, {1} a key: its value as text
    regexp: str  # {0} text, {1} pattern literal: whether it matches somewhere
    try_double: str  # text as DOUBLE, NULL where it does not read as one
    nan: str
    int_div: str  # {0} div {1}, whole numbers
    round: str  # half to even, as polars rounds
    explode: str
    list_of: str  # {0} comma-separated items: a list of them
    backslash_escapes: bool  # string literals read backslash escapes (Spark)
    ident_quote: str

    @property
    def empty_list(self) -> str:
        """Return an empty list literal."""
        return self.list_of.format("")

    def quote(self, text: str) -> str:
        """Return a string literal of ``text``."""
        if self.backslash_escapes:
            return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return "'" + text.replace("'", "''") + "'"

    def ident(self, name: str) -> str:
        """Return a quoted identifier."""
        q = self.ident_quote
        return q + name.replace(q, q + q) + q

    def struct(self, **fields: str) -> str:
        """Return a struct value of named SQL expressions."""
        if self.engine is Engine.DUCKDB:
            return "{" + ", ".join(f"'{k}': {v}" for k, v in fields.items()) + "}"
        return "named_struct(" + ", ".join(f"'{k}', {v}" for k, v in fields.items()) + ")"

    def double(self, value: float) -> str:
        """Return a DOUBLE literal (Spark reads ``2.5`` as a DECIMAL)."""
        text = repr(float(value))
        return text if self.engine is Engine.DUCKDB else text + "D"

    def _order(self, order: list[str], desc: frozenset[int]) -> str:
        return ", ".join(f"{o} DESC" if i in desc else o for i, o in enumerate(order))

    def _keys(self, order: list[str], desc: frozenset[int]) -> dict[str, str]:
        # Spark: a struct of the keys, a descending one negated (numbers only).
        return {f"k{i}": f"-{o}" if i in desc else o for i, o in enumerate(order)}

    def ordered_list(
        self, fields: dict[str, str], order: list[str], desc: frozenset[int] = frozenset()
    ) -> str:
        """Return the aggregate of a group's structs (``fields``) as a list sorted by the
        ``order`` expressions (those at the ``desc`` places descending)."""
        if self.engine is Engine.DUCKDB:
            return f"list({self.struct(**fields)} ORDER BY {self._order(order, desc)})"
        keys = self._keys(order, desc)
        # Structs sort field by field: the keys first, then the value as a tie-break.
        items = f"array_sort(collect_list({self.struct(**keys, v=self.struct(**fields))}))"
        return f"transform({items}, x -> x.v)"

    def first_by(
        self,
        value: str,
        order: list[str],
        desc: frozenset[int] = frozenset(),
        *,
        last: bool = False,
    ) -> str:
        """Return the aggregate of a group's ``value`` at its first (``last``) row by the
        ``order`` expressions (those at the ``desc`` places descending)."""
        if self.engine is Engine.DUCKDB:
            return f"{'last' if last else 'first'}({value} ORDER BY {self._order(order, desc)})"
        key = self.struct(**self._keys(order, desc))
        return f"{'max_by' if last else 'min_by'}({value}, {key})"


DUCKDB = Dialect(
    engine=Engine.DUCKDB,
    size="len({0})",
    list_filter="list_filter({0}, lambda {1}: {2})",
    list_contains="list_contains({0}, {1})",
    first_item="{0}[1]",
    json_text="json_extract_string({0}, '$.\"{1}\"')",
    regexp="regexp_matches({0}, {1})",
    try_double="TRY_CAST({0} AS DOUBLE)",
    nan="'NaN'::DOUBLE",
    int_div="{0} // {1}",
    round="round({0}, {1})",
    explode="unnest({0})",
    list_of="[{0}]",
    backslash_escapes=False,
    ident_quote='"',
)
# Spark 4 runs with ANSI mode on: casts and list indexes that fail raise, so the try_ and
# get forms; its regular expressions are Java's (the rule language checks Rust's syntax:
# the common patterns read alike); bround rounds half to even as polars does.
SPARK = Dialect(
    engine=Engine.SPARK,
    size="size({0})",
    list_filter="filter({0}, {1} -> {2})",
    list_contains="array_contains({0}, {1})",
    first_item="get({0}, 0)",
    json_text="get_json_object({0}, \"$['{1}']\")",
    regexp="regexp({0}, {1})",
    try_double="try_cast({0} AS DOUBLE)",
    nan="double('NaN')",
    int_div="{0} div {1}",
    round="bround({0}, {1})",
    explode="explode({0})",
    list_of="array({0})",
    backslash_escapes=True,
    ident_quote="`",
)
