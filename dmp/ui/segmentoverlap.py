"""The overlap heat map's data: the last run's pairs of segments, counted once per run.

Counting reads the run's whole members file (tens of seconds at a million persons and
fifty segments), so a page never waits for it: a small run is counted while the page is
asked for, a large one in a thread of this process while the page says so and asks again
(htmx) until :mod:`dmp.membership.overlaps` keeps the result for the run.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from dmp.config import Config
from dmp.membership import overlaps
from dmp.ui.segmentformat import PageFormats

log = logging.getLogger(__name__)
INLINE_MEMBERS = 200_000  # memberships a run may have to be counted while the page waits


@dataclass(frozen=True, slots=True)
class Cell:
    """The persons in both the row's and the column's segment, written out."""

    both: str
    share: str  # of the row segment's members
    title: str  # the cell as a sentence
    style: str  # its colour
    diagonal: bool


@dataclass(frozen=True, slots=True)
class Line:
    """One segment's row of the heat map."""

    id: str
    name: str
    members: str
    cells: tuple[Cell, ...]


def overlap_for(config: Config, run: dict[str, Any]) -> dict[str, Any] | None:
    """Return the run's overlap: kept, counted now (a small run), or None while a thread
    counts it (started here if none is counting)."""
    run_id = run["run_id"]
    found = overlaps.cached_overlap(config, run_id)
    if found is not None:
        return found
    if sum(run["members"].values()) <= INLINE_MEMBERS:
        found = overlaps.count_overlap(config)
        return found if found["run_id"] == run_id else None
    if overlaps.claim_count(config, run_id):
        worker = threading.Thread(target=_count, args=(config, run_id), daemon=True)
        worker.name = f"dmp-overlap-{run_id}"
        worker.start()
    return None


def _count(config: Config, run_id: str) -> None:
    try:
        overlaps.count_overlap(config)
    except Exception:  # a thread's error goes nowhere else: the log says it
        log.exception("segments: the overlap of run %s could not be counted", run_id)
    finally:
        overlaps.release_count(config, run_id)


def heat_lines(found: dict[str, Any], names: dict[str, str], sentence: str) -> list[Line]:
    """Return the rows of the heat map (segments still stored, by name); ``sentence`` is
    a cell's text alternative with ``n``, ``size``, ``row`` and ``col`` to fill in."""
    ids, both = found["segments"], found["overlap"]
    kept = [i for i, sid in enumerate(ids) if sid in names]
    kept.sort(key=lambda i: (names[ids[i]].casefold(), ids[i]))
    formats = PageFormats()
    lines = []
    for i in kept:
        size = formats.number(found["members"][i])
        cells = []
        for j in kept:
            share = both[i][j] / found["members"][i] if found["members"][i] else 0.0
            n = formats.number(both[i][j])
            title = sentence % {"n": n, "size": size, "row": names[ids[i]], "col": ids[j]}
            # At most 0.6 of the accent: dark text keeps a contrast above 4.5:1.
            style = f"background: rgba(31, 95, 139, {0.04 + 0.56 * share:.2f})"
            cells.append(Cell(n, formats.whole_percent(share), title, style, i == j))
        lines.append(Line(ids[i], names[ids[i]], size, tuple(cells)))
    return lines
