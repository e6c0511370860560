"""Compaction's swaps: merged event-log files put in place of their inputs, journaled so
that a crash at any point is rolled forward and no row is lost or doubled for good.

A swap's output is written and fsynced under its temporary name first (``.<name>.tmp``,
which no reader's ``part-*.parquet`` glob sees). Then the journal
(``events/.compaction.json``) names every swap's inputs and output, each output is renamed
into place before its inputs are removed (so every row is always in some file), and the
journal goes last. Rolling forward renames an output still under its temporary name and
removes the inputs left; it is idempotent. Whoever holds the compaction lock next rolls
forward: a compaction, the worker's schedule, or a matrix build (which checks before it
lists the log, so that no build counts a row of a half-finished swap twice).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis

from dmp.storage import keyspace, locks
from dmp.storage.parquetfiles import sync_dir, tmp_name, write_text

log = logging.getLogger(__name__)

JOURNAL = ".compaction.json"  # in the events folder: hidden from every reader's glob
MARK = "-compact-"  # in the names of the files compaction writes


@dataclass(frozen=True, slots=True)
class Swap:
    """Files of one day folder replaced by one (``output`` None: every row was dropped)."""

    inputs: tuple[Path, ...]
    output: Path | None


def output_name(folder: Path) -> Path:
    """Return a fresh name for a compacted file in a day folder (readers see it as a part)."""
    return folder / f"part-{datetime.now(UTC):%Y%m%dT%H%M%S}{MARK}{secrets.token_hex(4)}.parquet"


def journal_path(events_dir: Path) -> Path:
    """Return where the swaps under way are described (absent between compactions)."""
    return events_dir / JOURNAL


def swap(events_dir: Path, swaps: list[Swap]) -> None:
    """Put each swap's written output in place of its inputs, journaled."""
    if not swaps:
        return
    entries = [
        {
            "output": _relative(s.output) if s.output else None,
            "inputs": [_relative(p) for p in s.inputs],
        }
        for s in swaps
    ]
    journal = journal_path(events_dir)
    write_text(journal, json.dumps({"swaps": entries}))
    sync_dir(events_dir)
    for entry in entries:
        _install(events_dir, entry)
    journal.unlink()
    sync_dir(events_dir)


def remove_files(events_dir: Path, paths: list[Path]) -> None:
    """Remove event-log files (retention) and their day folders once empty."""
    for path in paths:
        path.unlink(missing_ok=True)
    for folder in sorted({p.parent for p in paths}):
        try:
            folder.rmdir()  # only if empty: a late flush may have written there since
        except OSError:
            pass
    if paths:
        sync_dir(events_dir)


def _relative(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _install(events_dir: Path, entry: dict) -> None:
    """Rename one swap's output in (unless it already is), then remove its inputs."""
    if entry["output"]:
        final = events_dir / entry["output"]
        if tmp_name(final).exists():
            os.replace(tmp_name(final), final)
            sync_dir(final.parent)
        if not final.exists():  # cannot happen: the output is durable before the journal
            log.error("compaction: %s is missing; its inputs stay", final)
            return
    _remove_inputs(events_dir, entry["inputs"])


def _remove_inputs(events_dir: Path, inputs: list[str]) -> None:
    for name in inputs:
        (events_dir / name).unlink(missing_ok=True)
    for folder in {(events_dir / n).parent for n in inputs}:
        sync_dir(folder)


def roll_forward(events_dir: Path) -> int:
    """Finish the swaps the journal names (the caller holds the compaction lock and keeps
    builds off the log); return how many there were."""
    journal = journal_path(events_dir)
    if not journal.exists():
        return 0
    entries = json.loads(journal.read_text(encoding="utf-8"))["swaps"]
    for entry in entries:
        _install(events_dir, entry)
    journal.unlink()
    sync_dir(events_dir)
    log.warning("compaction: finished %d swaps an interrupted compaction left", len(entries))
    return len(entries)


def finish_interrupted(r: redis.Redis, events_dir: Path) -> int:
    """Finish the swaps a dead compaction left, for a matrix build about to list the log
    (0 when there are none); locks.Busy while that compaction still holds its lock."""
    if not journal_path(events_dir).exists():
        return 0
    lease = locks.Lease(r, keyspace.COMPACTION_LOCK, locks.HOLD_SECONDS)
    if not lease.take():
        raise locks.Busy("a compaction is moving event-log files")
    try:
        return roll_forward(events_dir)
    finally:
        lease.release()


def remove_orphans(events_dir: Path) -> int:
    """Remove the temporary files of compactions that ended before their swap (call with
    the compaction lock held and no journal); return how many."""
    found = list(events_dir.glob(f"dt=*/.part-*{MARK}*.parquet.tmp"))
    for path in found:
        path.unlink(missing_ok=True)
    return len(found)
