"""Matrix builds: full or incremental, from the sources to a snapshot, then the new stage
transitions recorded in Redis (``segments.matrix`` computes; this module runs it)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import polars as pl
import redis

from dmp.config import Config
from dmp.ingest import swaps
from dmp.matrix.snapshots import (
    MAX_STATE_PARTS,
    iso_time,
    latest_snapshot,
    manifest_path,
    scan_state,
    state_parts,
    write_snapshot,
)
from dmp.matrix.sources import (
    event_files,
    last_merge_id,
    merge_map,
    model_texts,
    read_people,
    read_touchpoints,
    resolve_merges,
    touched_since,
)
from dmp.people import lifecycle
from dmp.storage import keyspace
from segments.content import ContentItem, parse_catalog
from segments.funnel import build_funnel
from segments.matrix import ROWS_VERSION, RowsMismatch, finish_matrix, refresh_matrix
from segments.personkey import all_keyed
from segments.personstate import decay_scale, person_state
from segments.scoring import ScoringModel, parse_model
from segments.stages import current_stages

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What a build wrote."""

    path: Path
    as_of_ms: int
    persons: int
    touchpoints: int
    stage_changes: int
    seconds: float
    engine: str = "polars"  # which engine computed the rows


def build(
    r: redis.Redis,
    config: Config,
    as_of_ms: int | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    incremental: bool = False,
) -> BuildResult:
    """Build the matrix as of a time (now by default) and write a snapshot.

    ``incremental`` refolds only the persons touched since the last build (new event
    files, events after its as-of time, stage changes, merges) and finishes everyone's
    row from the kept state: the rows a full build would give. It falls back to a full
    build when there is no earlier build, the model or catalog changed, or the as-of
    time goes back.
    """
    started = time.perf_counter()
    as_of = as_of_ms if as_of_ms is not None else int(time.time() * 1000)
    swaps.finish_interrupted(r, config.events_dir)  # no row of a half-done swap counts twice
    model_text, catalog_text = model_texts(r)
    model, catalog = parse_model(model_text), parse_catalog(catalog_text) if catalog_text else ()
    files = event_files(config.events_dir)
    marks = sorted(r.smembers(keyspace.MATRIX_TOUCHED))
    last_merge = last_merge_id(r)
    scale = decay_scale(model, as_of)
    fingerprint = {"model": _digest(model_text), "catalog": _digest(catalog_text), "scale": scale}
    fingerprint["rows"] = ROWS_VERSION
    spark_rows = None
    if config.engine == "spark":
        if incremental:
            log.info("matrix: the Spark engine refolds everyone: a full build")
        rows, new_stages, states, past, spark_rows = _on_spark(
            r, config, files, model, catalog, as_of, scale, progress
        )
        touched, parts = None, ()
    else:
        previous = _previous_build(config, fingerprint, as_of, files) if incremental else None
        (rows, new_stages, states, past, parts), touched = _fold(
            r, config, previous, files, marks, model, catalog, as_of, scale, progress
        )
    n_touch = int(rows["touchpoints_total"].sum())
    history_now = pl.concat([past, new_stages])
    funnel = build_funnel(rows, history_now, as_of)
    manifest = {
        "as_of": as_of,
        "files": files,
        "last_merge": last_merge,
        **fingerprint,
        "incremental": touched is not None,
        "refolded": rows.height if touched is None else len(touched),
        "engine": config.engine,  # a Spark build keeps no state: see _previous_build
        "state_parts": list(parts),  # the earlier state parts this one goes on from
    }
    if spark_rows is not None:
        manifest["spark_rows"] = spark_rows  # the rows' copy where Spark reads them
    path = write_snapshot(config, rows, as_of, funnel, states, history_now, manifest)
    # Recorded only once the snapshot is durable: a crash before this leaves the next
    # build to see the same moves again, never a record without its snapshot.
    n_changes = lifecycle.record_stages(r, new_stages.iter_rows())
    if marks:
        r.srem(keyspace.MATRIX_TOUCHED, *marks)
    seconds = time.perf_counter() - started
    log.info(
        "matrix: %d persons (%s, %s), %d touchpoints, %d stage changes as of %s in %.1f s -> %s",
        rows.height,
        config.engine,
        "full" if touched is None else f"{len(touched)} refolded",
        n_touch,
        n_changes,
        iso_time(as_of),
        seconds,
        path.name,
    )
    return BuildResult(path, as_of, rows.height, n_touch, n_changes, seconds, config.engine)


def _on_spark(
    r: redis.Redis,
    config: Config,
    files: list[str],
    model: ScoringModel,
    catalog: tuple[ContentItem, ...],
    as_of: int,
    scale: float,
    progress: Callable[[int], None] | None,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame, str]:
    """Return a full Spark build's rows, new stage transitions, state (none: Spark keeps
    no state) and stage history, and where Spark keeps its copy of the rows."""
    from dmp.matrix import spark  # pyspark is an extra: imported only when used

    people = read_people(r, progress)
    merged = resolve_merges({**people.merged, **merge_map(r)})
    rows, new_stages, copy = spark.build_rows(config, people, merged, files, model, catalog, as_of)
    state = spark.empty_state(model, catalog, as_of, scale)
    return rows, new_stages, state, people.history, copy


def _fold(
    r: redis.Redis,
    config: Config,
    previous: tuple[dict, Path] | None,
    files: list[str],
    marks: list[str],
    model: ScoringModel,
    catalog: tuple[ContentItem, ...],
    as_of: int,
    scale: float,
    progress: Callable[[int], None] | None,
) -> tuple[Folded, set[str] | None]:
    """Return what a polars build made (incremental from ``previous``) and the persons
    it refolded (None: everyone)."""
    if previous is not None:
        manifest, folder = previous
        merged = merge_map(r)
        touched, removed = touched_since(r, config, manifest, files, merged, marks)
        people = read_people(r, progress, sorted(touched))
        kept = Kept(
            pl.scan_parquet(folder / manifest["snapshot"]),
            scan_state(folder, manifest),
            pl.scan_parquet(folder / manifest["history"]),
            tuple(state_parts(manifest)),
        )
        fresh = (people.persons.lazy(), people.history.lazy())
        touchpoints = read_touchpoints(config.events_dir, merged)
        scoring = (model, catalog, as_of, scale)
        try:
            return refold(kept, fresh, touchpoints, touched, removed, scoring), touched
        except RowsMismatch as exc:  # a snapshot not made as this code makes them
            log.warning("matrix: the last build's rows cannot be refreshed (%s): a full build", exc)
    people = read_people(r, progress)
    # Tombstones miss persons merged within the batch that made them (never stored;
    # their events keep the short-lived id): the merge log has those too.
    merged = resolve_merges({**people.merged, **merge_map(r)})
    touchpoints = read_touchpoints(config.events_dir, merged)
    state = person_state(people.persons.lazy(), touchpoints, model, catalog, as_of, scale)
    state = state.cache()
    history = people.history.lazy()
    recorded = current_stages(history, as_of)
    keyed = all_keyed(people.persons.lazy())
    matrix, changes = finish_matrix(state, recorded, model, catalog, as_of, keyed=keyed)
    rows, new_stages, states, past = pl.collect_all(
        [matrix, changes, state, history], engine="streaming"
    )
    return Folded(rows, new_stages, states, past), None


@dataclass(frozen=True, slots=True)
class Kept:
    """What a build keeps for the next incremental one: its rows (sorted by person_id),
    each row's person state, the stage history it read, and the files of its state
    (``dmp.matrix.snapshots.state_parts``)."""

    rows: pl.LazyFrame
    state: pl.LazyFrame
    history: pl.LazyFrame
    parts: tuple[str, ...] = ()


class Folded(NamedTuple):
    """What a polars build made: its rows, new stage transitions, the person state it
    writes, the stage history it read, and the earlier state parts that state goes on
    from (none: it is everyone's)."""

    rows: pl.DataFrame
    new_stages: pl.DataFrame
    state: pl.DataFrame
    history: pl.DataFrame
    parts: tuple[str, ...] = ()


def refold(
    kept: Kept,
    fresh: tuple[pl.LazyFrame, pl.LazyFrame],
    touchpoints: pl.LazyFrame,
    touched: set[str],
    removed: set[str],
    scoring: tuple[ScoringModel, tuple[ContentItem, ...], int, float],
) -> Folded:
    """Return what an incremental build makes: the ``touched`` persons (``fresh``: their
    profiles and stage history) folded anew from all their ``touchpoints`` and finished,
    everyone else's row as the last build left it (``kept``) refreshed to the as-of time
    (``refresh_matrix``), the ``removed`` (merged away) gone. ``scoring`` is the model,
    the catalog, the as-of time and the decay scale, the same as the kept build's but
    for the as-of time.

    The state it writes is the refolded persons' alone, a part beside the kept ones,
    unless those are MAX_STATE_PARTS already: then everyone's."""
    model, catalog, as_of, scale = scoring
    ids = sorted(touched)
    gone = ~pl.col("person_id").is_in(sorted(touched | removed))
    # Read once: the fold reads its persons' touchpoints twice (its aggregations, and the
    # pages seen apart), which over the whole log would scan it twice.
    mine = touchpoints.filter(pl.col("person_id").is_in(ids)).collect(engine="streaming").lazy()
    fresh_state = person_state(fresh[0], mine, model, catalog, as_of, scale).cache()
    old_state = kept.state.filter(gone)
    history = pl.concat([kept.history.filter(gone), fresh[1]])
    recorded = current_stages(history, as_of).cache()
    keyed = all_keyed(fresh[0])
    matrix, changes = finish_matrix(fresh_state, recorded, model, catalog, as_of, keyed=keyed)
    history, new_rows, new_changes, new_state = pl.collect_all(
        [history, matrix, changes, fresh_state], engine="streaming"
    )
    old_rows, old_changes = refresh_matrix(
        kept.rows.filter(gone), old_state, recorded, model, catalog, as_of
    )
    rows = merge_sorted(old_rows, new_rows)
    new_state = new_state.select(old_state.collect_schema().names())
    if len(kept.parts) < MAX_STATE_PARTS:
        state, parts = new_state, kept.parts
    else:  # everyone's state in one part again
        state, parts = pl.concat([old_state.collect(engine="streaming"), new_state]), ()
    return Folded(rows, pl.concat([old_changes, new_changes]), state, history, parts)


def merge_sorted(many: pl.DataFrame, few: pl.DataFrame) -> pl.DataFrame:
    """Return two frames sorted by person_id as one: ``many``'s rows in slices between
    runs of ``few``'s (no row copied; several times quicker than a merge of wide rows
    while ``few`` is a small share; otherwise both are sorted together)."""
    if few.height * 8 > many.height:
        return pl.concat([many, few]).sort("person_id")
    at = many["person_id"].search_sorted(few["person_id"]).to_list()
    parts, start, run = [], 0, 0
    for i in range(1, len(at) + 1):
        if i < len(at) and at[i] == at[run]:
            continue  # the next row of few goes in the same gap of many
        if at[run] > start:
            parts.append(many.slice(start, at[run] - start))
        parts.append(few.slice(run, i - run))
        start, run = at[run], i
    parts.append(many.slice(start))
    return pl.concat(parts, rechunk=False)


def build_touchpoints(r: redis.Redis, config: Config, manifest: dict) -> pl.LazyFrame:
    """Return the touchpoints a build read: its event files (the whole log once a
    compaction has merged or removed some), merges up to its last one."""
    merged = merge_map(r, until=manifest["last_merge"])
    return read_touchpoints(config.events_dir, merged, files_still_there(config, manifest))


def files_still_there(config: Config, manifest: dict) -> list[str] | None:
    """Return a build's event files if the log has them all, else None (the whole log):
    a compaction merges files into new ones and removes them (``dmp.ingest.compaction``)."""
    files = manifest["files"]
    return files if all((config.events_dir / f).exists() for f in files) else None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _previous_build(
    config: Config, fingerprint: dict, as_of: int, files: list[str]
) -> tuple[dict, Path] | None:
    """Return the last build's manifest and folder if an incremental build can use it."""
    snapshot = latest_snapshot(config)
    if snapshot is None or not manifest_path(snapshot).exists():
        log.info("matrix: no earlier build to go on from: a full build")
        return None
    manifest = json.loads(manifest_path(snapshot).read_text(encoding="utf-8"))
    if manifest.get("engine", "polars") != "polars":
        log.info(
            "matrix: the last build ran on %s, which keeps no state: a full build",
            manifest["engine"],
        )
        return None
    if any(manifest.get(k) != v for k, v in fingerprint.items()):
        log.info("matrix: the scoring model, the catalog or the decay scale changed: a full build")
        return None
    if as_of < manifest["as_of"]:
        log.info("matrix: the as-of time is before the last build's: a full build")
        return None
    if not set(manifest["files"]) <= set(files):
        # Compacted (merged into new files, rows erased) or past retention: the rows of
        # the files gone may be in new files, or nowhere, so no kept state can be trusted.
        log.info("matrix: event files were compacted since the last build: a full build")
        return None
    return manifest, snapshot.parent
