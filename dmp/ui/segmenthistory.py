"""Each segment's history over the recent runs, read from the run records in Redis.

A run record (:func:`dmp.membership.results.run_records`) holds every segment's size,
version and failure of that run, and (since per-segment moves were recorded) who entered
and left each segment. Reading the newest records is one ``LRANGE`` of small JSON texts:
the list page and the detail page never read a member file.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import polars as pl
import redis
from markupsafe import Markup

from dmp.config import Config
from dmp.matrix import snapshots
from dmp.membership.results import run_records

TREND_RUNS = 20  # runs a list row's sparkline shows
HISTORY_RUNS = 30  # runs the detail page shows


@dataclass(frozen=True, slots=True)
class RunPoint:
    """One segment in one run."""

    run_id: str
    at: int  # the run's as-of time (ms)
    members: int
    persons: int | None  # persons in the matrix the run read (None: not recorded)
    entered: int | None  # None: the run did not record its moves per segment
    left: int | None
    failed: str | None  # the error, if the segment failed in that run (members kept)
    version: int | None

    @property
    def share(self) -> float | None:
        """Return the members' share of all persons, if known."""
        return self.members / self.persons if self.persons else None


def load_runs(r: redis.Redis, limit: int) -> list[dict[str, Any]]:
    """Return the newest ``limit`` run records, newest first."""
    return run_records(r, limit)


def history(runs: list[dict[str, Any]], sid: str) -> list[RunPoint]:
    """Return a segment's points in the runs that had it, oldest first."""
    points = []
    for run in reversed(runs):
        if sid not in run.get("members", {}):
            continue
        moves = run.get("changes")
        entered, left = (moves.get(sid, [0, 0]) if moves is not None else [None, None])[:2]
        points.append(
            RunPoint(
                run_id=run["run_id"],
                at=int(run["as_of"]),
                members=int(run["members"][sid]),
                persons=run.get("persons"),
                entered=entered,
                left=left,
                failed=run.get("failed", {}).get(sid),
                version=run.get("versions", {}).get(sid),
            )
        )
    return points


def with_persons(points: list[RunPoint], persons: int | None) -> list[RunPoint]:
    """Return the points, those without a count of persons given ``persons``."""
    return [p if p.persons is not None else replace(p, persons=persons) for p in points]


def matrix_persons(config: Config) -> int | None:
    """Return the persons in the latest matrix snapshot (its Parquet footer: no rows read)."""
    path = snapshots.latest_snapshot(config)
    if path is None:
        return None
    return int(pl.scan_parquet(path).select(pl.len()).collect().item())


def sparkline(values: list[int], label: str, width: int = 120, height: int = 28) -> Markup:
    """Return a small inline SVG line of ``values`` (oldest first), labelled ``label``."""
    if not values:
        return Markup("")
    low, high = min(values), max(values)
    pad, span = 3, (high - low) or 1
    step = (width - 2 * pad) / max(len(values) - 1, 1)

    def y(v: int) -> float:
        return height / 2 if high == low else height - pad - (v - low) / span * (height - 2 * pad)

    points = [(pad + i * step, y(v)) for i, v in enumerate(values)]
    line = " ".join(f"{x:.1f},{yy:.1f}" for x, yy in points)
    last_x, last_y = points[-1]
    shape = (
        f'<polyline points="{line}" fill="none" stroke="#1f5f8b" stroke-width="1.8" '
        f'stroke-linejoin="round" stroke-linecap="round"/>'
        if len(points) > 1
        else ""
    )
    return Markup(
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{Markup.escape(label)}">{shape}'
        f'<circle cx="{last_x:.1f}" cy="{last_y:.1f}" r="2.6" fill="#1f5f8b"/></svg>'
    )
