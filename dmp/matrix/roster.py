"""The roster: the latest build's persons with what a list of them shows, kept in memory
so that the persons behind any number (a tier, a stage, an interest, a channel, a
segment) are counted and paged in milliseconds.

A page reading the snapshot itself pays for decoding its person ids and channel lists,
~150-450 ms at a million persons per look; the roster pays that once per build and
process (~1 s and ~70 MB at a million), highest score first, channels as bits. A build
of at most ``INLINE_ROWS`` persons is loaded while the page waits; a bigger one on a
thread, while the roster of the build before (marked ``stale``) or, the first time,
the page's wait stands in.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from dmp.config import Config
from dmp.matrix.snapshots import latest_snapshot, matrix_dir

log = logging.getLogger(__name__)
COLUMNS = ("person_id", "email", "tier", "stage", "score", "top_interest", "last_seen")
CHANNELS = ("retargeting", "email", "phone", "postal")  # bit i of ``reach`` is channel i
INLINE_ROWS = 200_000
_LOCK = threading.Lock()
_ROSTERS: dict[Path, Roster] = {}  # matrix folder -> the newest roster loaded
_LOADING: dict[Path, threading.Thread] = {}  # matrix folder -> the thread loading one
MASKS_KEPT = 64  # segment member masks kept (125 kB each at a million persons)
_MASKS: dict[tuple[str, str], pl.Series] = {}  # (snapshot, run and segment) -> mask


@dataclass(frozen=True, slots=True)
class Roster:
    """One build's persons, highest score first (see :func:`load_roster`)."""

    snapshot: str  # the snapshot's file name
    rows: pl.DataFrame
    stale: bool = False  # a newer build is being loaded


@dataclass(frozen=True, slots=True)
class RosterFilter:
    """Which persons a list shows; None means any."""

    tier: str | None = None
    stage: str | None = None
    interest: str | None = None  # the top interest
    channel: str | None = None  # one of CHANNELS
    touched: str | None = None  # a touchpoint channel (web, email, crm …) they were seen on
    members: pl.Series | None = None  # a Boolean per roster row (see member_mask)


def load_roster(snapshot: Path) -> pl.DataFrame:
    """Return a snapshot's roster rows: ``COLUMNS``, ``reach`` and ``key`` (the id's
    hash), highest score first."""
    reach = pl.sum_horizontal(
        pl.col("channels").list.contains(name).fill_null(False).cast(pl.UInt8) * (1 << i)
        for i, name in enumerate(CHANNELS)
    ).cast(pl.UInt8)
    categories = [pl.col(name).cast(pl.Categorical) for name in ("tier", "stage", "top_interest")]
    touched = pl.col("touchpoints_by_channel").list.eval(pl.element().struct.field("channel"))
    return (
        pl.scan_parquet(snapshot)
        .select(
            *COLUMNS,
            reach.alias("reach"),
            touched.cast(pl.List(pl.Categorical)).alias("touched"),
            pl.col("person_id").hash().alias("key"),
        )
        .with_columns(categories)
        .sort("score", "person_id", descending=[True, False], nulls_last=True)
        .collect()
    )


def latest_roster(config: Config, inline_rows: int = INLINE_ROWS) -> Roster | None:
    """Return the latest build's roster (None before the first build); see the module."""
    snapshot = latest_snapshot(config)
    if snapshot is None:
        return None
    folder = matrix_dir(config)
    with _LOCK:
        held = _ROSTERS.get(folder)
    if held is not None and held.snapshot == snapshot.name:
        return held
    if held is None or pq.ParquetFile(snapshot).metadata.num_rows <= inline_rows:
        return _load(folder, snapshot)
    with _LOCK:
        if folder not in _LOADING:
            thread = threading.Thread(target=_load_quietly, args=(folder, snapshot), daemon=True)
            _LOADING[folder] = thread
            thread.start()
    return Roster(held.snapshot, held.rows, stale=True)


def _load(folder: Path, snapshot: Path) -> Roster:
    roster = Roster(snapshot.name, load_roster(snapshot))
    with _LOCK:
        _ROSTERS[folder] = roster
    return roster


def _load_quietly(folder: Path, snapshot: Path) -> None:
    try:
        _load(folder, snapshot)
    except (OSError, pl.exceptions.PolarsError):  # pruned meanwhile: the next look retries
        log.warning("roster: %s could not be loaded", snapshot.name, exc_info=True)
    finally:
        with _LOCK:
            _LOADING.pop(folder, None)


def select_rows(roster: Roster, where: RosterFilter) -> pl.DataFrame:
    """Return the roster's rows ``where`` holds, highest score first."""
    tests = []
    for name in ("tier", "stage"):
        if getattr(where, name) is not None:
            tests.append(pl.col(name) == getattr(where, name))
    if where.interest is not None:
        tests.append(pl.col("top_interest") == where.interest)
    if where.channel is not None:
        tests.append((pl.col("reach") & (1 << CHANNELS.index(where.channel))) != 0)
    if where.touched is not None:
        tests.append(pl.col("touched").list.contains(where.touched).fill_null(False))
    rows = roster.rows if where.members is None else roster.rows.filter(where.members)
    return rows.filter(*tests) if tests else rows


def member_mask(roster: Roster, key: str, load: Callable[[], pl.Series]) -> pl.Series:
    """Return a Boolean per roster row: is its person among the ids ``load`` returns (a
    segment's members in a run). Kept per roster and ``key`` (run and segment): the first
    look costs a join of the ids (~150 ms for 500,000 of a million), the next ones nothing.
    """
    with _LOCK:
        found = _MASKS.get((roster.snapshot, key))
    if found is not None:
        return found
    # By 64-bit hashes of the ids (a chance of ~1e-7 in a million of a wrong hit): a
    # join of strings costs four times as much.
    mask = roster.rows["key"].is_in(load().hash().implode())
    with _LOCK:
        if len(_MASKS) >= MASKS_KEPT:
            _MASKS.pop(next(iter(_MASKS)))
        _MASKS[(roster.snapshot, key)] = mask
    return mask


def roster_page(
    roster: Roster, where: RosterFilter, offset: int, limit: int
) -> tuple[int, list[dict]]:
    """Return how many persons ``where`` holds and the ``limit`` from ``offset`` on."""
    rows = select_rows(roster, where)
    page = rows.slice(offset, limit).with_columns(
        pl.col("tier", "stage", "top_interest").cast(pl.Utf8)
    )
    return rows.height, page.drop("reach", "key").to_dicts()
