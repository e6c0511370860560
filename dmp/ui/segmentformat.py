"""Numbers and moments of a segment page, formatted as the UI's filters do, but fast.

The overlap heat map of 50 segments shows 2,500 cells, each with counts and a share;
Babel's formatters take some 30 µs a call, which adds up to most of a page's time
budget. Whole numbers take :func:`dmp.ui.i18n.number`'s fast path; shares and moments go
through the filters, each distinct value once per page.
"""

from __future__ import annotations

from dmp.ui import i18n


class PageFormats:
    """One page's formatting in its language, each distinct share and moment once."""

    def __init__(self) -> None:
        self._shares: dict[int, str] = {}
        self._moments: dict[int, str] = {}

    def number(self, value: int | None) -> str:
        """Return a whole number as :func:`dmp.ui.i18n.number` writes it."""
        return i18n.number(value)

    def whole_percent(self, share: float) -> str:
        """Return a share (0.0–1.0) as a whole percentage."""
        key = round(share * 100)
        if key not in self._shares:
            self._shares[key] = i18n.percent(key / 100, 0)
        return self._shares[key]

    def when(self, ms: int) -> str:
        """Return a moment (epoch ms) as :func:`dmp.ui.i18n.when` writes it."""
        if ms not in self._moments:
            self._moments[ms] = i18n.when(ms)
        return self._moments[ms]
