"""What applying another scoring model would change: score bands and stages, over the
latest build (its rows, person state and stage history; ``segments.rescoring`` computes).

The persons' present scores and stages are those of the latest build. What the new model
would give is computed from that build's kept state at its as-of time, the stage history
the build recorded included (so an MQL that no longer qualifies stays one until it goes
stale, as the next build would keep it).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import polars as pl
import redis

from dmp.config import Config
from dmp.matrix import builds, snapshots, sources
from segments.rescoring import band_edges, band_of, needs_touchpoints, rescore
from segments.scoring import ScoringModel, parse_model
from segments.stages import current_stages

EXAMPLES = 8  # persons shown who would change


@dataclass(frozen=True, slots=True)
class Move:
    """How many persons go from one band (or stage) to another."""

    before: str
    after: str
    persons: int


@dataclass(frozen=True, slots=True)
class Example:
    """One person who would change score band or stage."""

    person_id: str
    score_before: float
    score_after: float
    stage_before: str
    stage_after: str


@dataclass(frozen=True, slots=True)
class RescoringPlan:
    """What a model would change over the latest build."""

    as_of_ms: int
    persons: int
    edges: tuple[float, ...]  # the bands' lower edges (see segments.rescoring)
    bands: tuple[Move, ...]  # band indexes as strings: "0" below the first edge
    stages: tuple[Move, ...]
    examples: tuple[Example, ...]
    read_touchpoints: bool  # the event log was read (new activity conditions)
    seconds: float

    def changed(self, moves: tuple[Move, ...]) -> int:
        """Return how many persons of ``moves`` change."""
        return sum(m.persons for m in moves if m.before != m.after)


def built_model(r: redis.Redis, manifest: dict) -> ScoringModel | None:
    """Return the model the build of ``manifest`` used, if it is still the applied one."""
    text = sources.model_texts(r)[0]
    same = hashlib.sha256(text.encode()).hexdigest() == manifest.get("model")
    return parse_model(text) if same else None


def plan_rescoring(r: redis.Redis, config: Config, new: ScoringModel) -> RescoringPlan:
    """Return what ``new`` would change over the latest build (LookupError before one)."""
    started = time.perf_counter()
    snapshot, manifest = snapshots.latest_build(config)
    folder, as_of = snapshot.parent, int(manifest["as_of"])
    state = snapshots.scan_state(folder, manifest)
    history = pl.scan_parquet(folder / manifest["history"])
    built = built_model(r, manifest)
    touch = built is None or needs_touchpoints(built, new)
    touchpoints = builds.build_touchpoints(r, config, manifest) if touch else None
    after = rescore(state, current_stages(history, as_of), built or new, new, as_of, touchpoints)
    edges = band_edges(built or new)
    before = pl.scan_parquet(snapshot).select("person_id", "score", "stage")
    both = (
        before.join(after, on="person_id", how="inner", suffix="_after")
        .with_columns(
            band=band_of(pl.col("score"), edges), band_after=band_of(pl.col("score_after"), edges)
        )
        .collect(engine="streaming")
    )
    return RescoringPlan(
        as_of_ms=as_of,
        persons=both.height,
        edges=edges,
        bands=_moves(both, "band"),
        stages=_moves(both, "stage"),
        examples=_examples(both),
        read_touchpoints=touch,
        seconds=round(time.perf_counter() - started, 3),
    )


def _moves(both: pl.DataFrame, column: str) -> tuple[Move, ...]:
    counts = both.group_by(column, f"{column}_after").len().sort(column, f"{column}_after")
    return tuple(Move(str(a), str(b), int(n)) for a, b, n in counts.iter_rows())


def _examples(both: pl.DataFrame) -> tuple[Example, ...]:
    moved = both.filter(
        (pl.col("band") != pl.col("band_after")) | (pl.col("stage") != pl.col("stage_after"))
    )
    delta = (pl.col("score_after") - pl.col("score")).abs()
    biggest = moved.with_columns(delta=delta).top_k(EXAMPLES, by="delta")
    biggest = biggest.sort(["delta", "person_id"], descending=[True, False])
    return tuple(
        Example(pid, score, after, stage, stage_after)
        for pid, score, stage, after, stage_after in biggest.select(
            "person_id", "score", "stage", "score_after", "stage_after"
        ).iter_rows()
    )
