"""The live lane: the segments of just the persons new data touched, straight into the
lookup sets, within a second of the data.

A run (:mod:`dmp.membership.runs`) rebuilds everyone's matrix row and writes snapshots; its
cost grows with the number of persons (seconds at 100k). The worker's schedule runs one
every minute, and between runs, as each event file lands, this lane recomputes only the
persons in it (and those changed outside the log: imports, stage records): their matrix
rows from their whole history (the same state and finish as a build), their ``did``
counts and every segment, and moves their lookup sets. Nothing is written to Parquet
and no change is recorded: the next run finds the same memberships (it evaluates the
same rules on the same data), records who entered and left, and catches what only time
changes (windows closing, scores decaying) for everyone.

A segment that cannot be evaluated (stored before a check that now refuses it, or
raising when run) is left out: its lookup sets stay as they are, the others move. Runs
record and log it; a tick only returns it.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa
import redis

from dmp.config import Config
from dmp.ingest.eventlog import scan_events
from dmp.ingest.logindex import LogIndex
from dmp.matrix import sources
from dmp.membership import definitions
from dmp.membership.lookupsets import move_sets
from dmp.membership.runs import NOT_A_SEGMENTS_FAULT
from segments.content import parse_catalog
from segments.evaluator import all_dids, check_segment, did_counts, evaluate_apart, membership
from segments.language import Node
from segments.matrix import TOUCHPOINT_SCHEMA, finish_matrix
from segments.personstate import decay_scale, person_state
from segments.scoring import parse_model
from segments.stages import current_stages

log = logging.getLogger(__name__)

# Touchpoints stamped up to this far after a tick (clients' clocks run ahead) count once
# their time has come: their persons are looked at again by the following ticks.
AHEAD_MS = 5 * 60_000
# How much later than its as-of time a tick that read rows not flushed yet notes its
# persons for runs (a run's period: see move_sets' noted_at).
UNFLUSHED_NOTE_MS = 60_000


# A tick costs about 0.3 s whatever its size; these were 0.05 s of it, each time alike.
_model = functools.lru_cache(maxsize=4)(parse_model)  # by the model's text
_catalog = functools.lru_cache(maxsize=4)(parse_catalog)


_COMPILED: set[tuple[str, tuple]] = set()  # (definition's repr, rows' schema) that compiled


def _check(tree: Node, schema: tuple, as_of: int, run: bool) -> None:
    """check_segment on the rows' ``schema``, a definition that compiled once (``run``
    off) not compiled again. Were one to fail at a later as-of time, the pass over every
    segment raises and evaluate_apart checks each again, with ``run``: never remembered."""
    key = (repr(tree), schema)  # trees hold lists: not hashable
    if run or key not in _COMPILED:
        check_segment(tree, dict(schema), TOUCHPOINT_SCHEMA, as_of, run=run)
    if not run:
        if len(_COMPILED) >= 1024:  # definitions edited many times: start over
            _COMPILED.clear()
        _COMPILED.add(key)


@dataclass(frozen=True, slots=True)
class LiveResult:
    """What a live tick did."""

    person_ids: tuple[str, ...]  # evaluated
    moved: int  # lookup-set memberships added or removed
    seconds: float
    ahead: tuple[str, ...] = ()  # with touchpoints stamped just after the tick: look again
    failed: dict[str, str] = field(default_factory=dict)  # segment id: error (sets left be)


def live_tick(
    r: redis.Redis,
    config: Config,
    new_files: list[str],
    marks: set[str] = frozenset(),  # type: ignore[assignment]
    as_of_ms: int | None = None,
    index: LogIndex | None = None,
    unflushed: pa.Table | None = None,
) -> LiveResult:
    """Evaluate every segment for the persons in ``new_files`` (event-log files, relative
    to it) and the ``marks`` (persons changed outside the log), and move their lookup
    sets to match. Persons merged away lose theirs (lookups follow the merge). Their
    history is read from the files ``index`` names for them (it must hold the whole log),
    or without one from the whole log, and from the ``unflushed`` event rows (handed over
    by the ingest worker before their flush, :mod:`dmp.ingest.livefeed`)."""
    started = time.perf_counter()
    as_of = as_of_ms if as_of_ms is not None else int(time.time() * 1000)
    stored, _invalid = definitions.load_segments(r)  # the invalid ones: left be (runs say)
    if not stored or not (new_files or marks):
        return LiveResult((), 0, time.perf_counter() - started)
    found = set(marks)
    if new_files:
        fresh = scan_events(config.events_dir, new_files).select("person_id").drop_nulls()
        found |= set(fresh.unique().collect()["person_id"].to_list())
    asked = sources.read_people(r, pids=sorted(found))
    merged = {**asked.merged, **sources.merge_map(r)}  # tombstones; the log resolves chains
    people = asked  # read_people leaves merged-away persons out already
    targets = sorted({merged[p] for p in found if p in merged} - found)
    if targets:  # the persons they were merged into: read those too
        more = sources.read_people(r, pids=targets)
        people = sources.People(
            pl.concat([asked.persons, more.persons]), pl.concat([asked.history, more.history]), {}
        )
    pids = people.persons["person_id"].to_list()  # live persons with a profile
    model_text, catalog_text = sources.model_texts(r)
    model, catalog = _model(model_text), _catalog(catalog_text) if catalog_text else ()
    # Only their rows: the ids they had before merges too, filtered in the scan itself.
    wanted = set(pids)
    theirs = {old: new for old, new in merged.items() if new in wanted}
    ids = sorted(wanted | set(theirs))
    files = None if index is None else index.files_of(ids)
    touchpoints = (
        sources.read_touchpoints(
            config.events_dir, theirs, files=files, persons=ids, unflushed=unflushed
        )
        .collect()
        .lazy()
    )
    state = person_state(
        people.persons.lazy(), touchpoints, model, catalog, as_of, decay_scale(model, as_of)
    )
    rows, _ = finish_matrix(
        state, current_stages(people.history.lazy(), as_of), model, catalog, as_of
    )
    trees = {s.definition.id: s.definition.where for s in stored}

    def attempt(some: Mapping[str, Node]) -> pl.DataFrame:
        """Return the membership of the touched persons in ``some`` segments."""
        return membership(rows, did_counts(touchpoints, all_dids(some), as_of), some).collect()

    schema = rows.collect_schema()
    flags, failed = evaluate_apart(
        trees,
        attempt,
        lambda tree, run: _check(tree, tuple(schema.items()), as_of, run),
        NOT_A_SEGMENTS_FAULT,
    )
    ran = [sid for sid in trees if sid not in failed]
    desired = dict(
        flags.select(
            "person_id",
            pl.concat_list(
                [pl.when(pl.col(sid)).then(pl.lit(sid)) for sid in ran] or [pl.lit(None, pl.Utf8)]
            )
            .list.drop_nulls()
            .alias("in"),
        ).rows()
    )
    desired = {pid: set(now) for pid, now in desired.items()}
    desired |= {pid: set() for pid in found if pid in merged}  # merged away: in nothing
    # Evaluated with rows not flushed yet: a run that started before their flush (so
    # without them) must leave these persons be; the run after it settles them.
    early = unflushed is not None and unflushed.num_rows > 0
    moved = move_sets(r, desired, set(ran), noted_at=as_of + (UNFLUSHED_NOTE_MS if early else 0))
    soon = touchpoints.filter(pl.col("timestamp").is_between(as_of + 1, as_of + AHEAD_MS))
    ahead = tuple(sorted(soon.select("person_id").unique().collect()["person_id"].to_list()))
    result = LiveResult(tuple(pids), moved, time.perf_counter() - started, ahead, failed)
    for sid, error in sorted(failed.items()):  # runs log it once per run; here: debug
        log.debug("segments live: segment %s failed, its sets left be: %s", sid, error)
    log.info(
        "segments live: %d persons, %d memberships moved in %.2f s",
        len(pids),
        result.moved,
        result.seconds,
    )
    return result
