"""CSV files dmp writes, safe to open in a spreadsheet (OWASP "CSV injection").

A text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is
read by Excel, LibreOffice and Google Sheets as a formula (``=HYPERLINK(…)`` can leak
data or run commands), so it is written with a ``'`` in front, which spreadsheets show
as text. Only text cells are touched: a negative number in a numeric column stays a
number. Every CSV export in dmp goes through :func:`write_csv` (the demo files `dmp synth`
writes are input for `dmp import`, not exports, and are written as they are).
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_FORMULA = "^[" + re.escape("".join(FORMULA_STARTS)) + "]"


def safe_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """Return ``frame`` with every text cell that starts a formula prefixed by ``'``."""
    text = [name for name, kind in frame.schema.items() if kind in (pl.Utf8, pl.Categorical)]
    text += [name for name, kind in frame.schema.items() if isinstance(kind, pl.Enum)]
    return frame.with_columns(
        pl.when(pl.col(n).cast(pl.Utf8).str.contains(_FORMULA))
        .then(pl.lit("'") + pl.col(n).cast(pl.Utf8))
        .otherwise(pl.col(n).cast(pl.Utf8))
        .alias(n)
        for n in text
    )


def write_csv(frame: pl.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` as CSV with formula-like text cells neutralised."""
    safe_frame(frame).write_csv(path)
