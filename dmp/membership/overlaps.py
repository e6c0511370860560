"""The overlap of the last run's segments, kept per run: counted once, read many times.

:func:`dmp.membership.preview.overlap` counts every pair of segments over the run's
members file: at a million persons and fifty segments that takes tens of seconds, far
too long for a page. A run's members file never changes, so its overlap is written once
as ``<segments dir>/overlap/<run id>.json`` and read from there (a few kB). A marker file
beside it says a count is under way, so that two processes do not count the same run.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from dmp.config import Config
from dmp.membership import results
from dmp.membership.preview import overlap
from dmp.storage.parquetfiles import write_text

log = logging.getLogger(__name__)
FOLDER = "overlap"
STALE_SECONDS = 900  # a marker older than this was left by a count that died


def overlap_path(config: Config, run_id: str) -> Path:
    """Return where a run's overlap is kept."""
    return results.segments_dir(config) / FOLDER / f"{run_id}.json"


def cached_overlap(config: Config, run_id: str) -> dict[str, Any] | None:
    """Return a run's overlap as counted before, or None if it was not counted yet."""
    path = overlap_path(config, run_id)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def count_overlap(config: Config) -> dict[str, Any]:
    """Count the last run's overlap, keep it for its run, drop those of older runs; return
    it (LookupError before the first run)."""
    found = overlap(config)
    path = overlap_path(config, found["run_id"])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(found))
    for old in path.parent.glob("*.json"):
        if old.name < path.name:  # run ids sort by time: a newer run's count stays
            old.unlink(missing_ok=True)
    return found


def claim_count(config: Config, run_id: str) -> bool:
    """Return True if this caller should count the run's overlap (no other count is under
    way); the caller calls :func:`release_count` when done."""
    marker = overlap_path(config, run_id).with_suffix(".counting")
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        if time.time() - marker.stat().st_mtime > STALE_SECONDS:
            marker.unlink(missing_ok=True)
    except FileNotFoundError:
        pass
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def release_count(config: Config, run_id: str) -> None:
    """Remove the marker of a count of the run's overlap."""
    overlap_path(config, run_id).with_suffix(".counting").unlink(missing_ok=True)


def counting(config: Config, run_id: str) -> bool:
    """Return whether a count of the run's overlap is under way."""
    marker = overlap_path(config, run_id).with_suffix(".counting")
    try:
        return time.time() - marker.stat().st_mtime <= STALE_SECONDS
    except FileNotFoundError:
        return False
