"""A build's summary for the overview: touchpoints per day and channel and the topics they
were about, over the days up to the build, counted once per build and kept beside it.

The counts come from the event log files the build read, in the partitions of the window
(each ``dt=`` partition holds the events of its UTC day). Counts are kept per file
(``<snapshot>.tally.json``): event files never change once written (a compaction writes
new ones), so the next build's summary counts only the files that are new to it. The
page reads the small ``<snapshot>.summary.json``; both go with their snapshot when it is
pruned (``dmp.matrix.snapshots``).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from dmp.config import Config
from dmp.matrix.builds import files_still_there
from dmp.matrix.snapshots import latest_snapshot, manifest_path, matrix_dir
from dmp.matrix.sources import event_files
from dmp.storage.parquetfiles import write_text

log = logging.getLogger(__name__)
WINDOW_DAYS = 30
# New event files up to this size are counted while the page waits (about one day's
# files at a million persons: ~150 ms); more (the first summary, a compaction) on a thread.
INLINE_BYTES = 4 << 20
TOP_TOPICS = 10
MAX_CHANNELS = 6  # the rest are summed as OTHER (a Segment call may name any channel)
OTHER = "other"
Tally = dict[str, dict[str, dict[str, int]]]  # file -> {"channels"|"topics": name -> count}
_LOCK = threading.Lock()
_COUNTING: dict[str, threading.Thread] = {}  # snapshot name -> the thread counting its files


def summary_path(snapshot: Path) -> Path:
    """Return where a snapshot's summary is kept."""
    return snapshot.with_suffix(".summary.json")


def tally_path(snapshot: Path) -> Path:
    """Return where a snapshot's per-file counts are kept (for the next build's summary)."""
    return snapshot.with_suffix(".tally.json")


def latest_summary(config: Config, inline_bytes: int = INLINE_BYTES) -> dict[str, Any] | None:
    """Return the latest build's summary; None before the first build.

    The first time it is asked for, the event files new to it are counted: here when they
    are at most ``inline_bytes``, else on a thread while the newest earlier summary
    (marked ``stale``) or None stands in (a page never waits seconds for it).
    """
    snapshot = latest_snapshot(config)
    if snapshot is None or not manifest_path(snapshot).exists():
        return None
    path = summary_path(snapshot)
    if path.exists():
        return _read(path)
    manifest = json.loads(manifest_path(snapshot).read_text(encoding="utf-8"))
    files, earlier = window_files(config, manifest), earlier_tally(config)
    new = sum((config.events_dir / f).stat().st_size for f in files if f not in earlier)
    if new <= inline_bytes:
        return write_summary(
            config, snapshot, manifest["as_of"], count_files(config, files, earlier)
        )
    with _LOCK:
        if snapshot.name not in _COUNTING:
            _COUNTING[snapshot.name] = threading.Thread(
                target=_count_later, args=(config, snapshot, manifest, files, earlier), daemon=True
            )
            _COUNTING[snapshot.name].start()
    return _stale(config)


def _stale(config: Config) -> dict[str, Any] | None:
    """Return the newest summary there is, marked ``stale`` (None if there is none)."""
    older = _newest(matrix_dir(config).glob("*.summary.json"))
    return {**older, "stale": True} if older else None


def write_summary(config: Config, snapshot: Path, as_of_ms: int, tally: Tally) -> dict[str, Any]:
    """Keep a build's per-file counts and summary beside its snapshot; return the summary."""
    found = {**summarise(tally, as_of_ms), "snapshot": snapshot.name}
    write_text(tally_path(snapshot), json.dumps(tally, separators=(",", ":")))
    write_text(summary_path(snapshot), json.dumps(found))
    return found


def wait_for_counts(timeout: float | None = None) -> None:
    """Wait for the counts started on threads (tests, and a process about to exit)."""
    with _LOCK:
        threads = list(_COUNTING.values())
    for thread in threads:
        thread.join(timeout)


def _count_later(
    config: Config, snapshot: Path, manifest: dict[str, Any], files: list[str], earlier: Tally
) -> None:
    try:
        write_summary(config, snapshot, manifest["as_of"], count_files(config, files, earlier))
    except (
        Exception
    ):  # a snapshot pruned meanwhile, a file compacted away: the next view tries again
        log.exception("summary: counting the touchpoints of %s failed", snapshot.name)
    finally:
        with _LOCK:
            _COUNTING.pop(snapshot.name, None)


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _newest(paths: Iterable[Path]) -> dict[str, Any] | None:
    """Return the newest readable of ``paths``' JSON (pruned or unreadable ones skipped)."""
    for path in sorted(paths, key=_mtime, reverse=True):
        try:
            return _read(path)
        except (OSError, ValueError):
            continue
    return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # compacted away since it was listed
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:  # pruned since it was listed
        return 0.0


def window_days(as_of_ms: int) -> list[str]:
    """Return the WINDOW_DAYS UTC days (YYYY-MM-DD) up to and including ``as_of_ms``'s."""
    last = datetime.fromtimestamp(as_of_ms / 1000, UTC).date()
    return [(last - timedelta(days=n)).isoformat() for n in range(WINDOW_DAYS - 1, -1, -1)]


def window_files(config: Config, manifest: dict[str, Any]) -> list[str]:
    """Return the event files a build read (the log as it is now, if a compaction has
    replaced some) that lie in the partitions of its window."""
    files = files_still_there(config, manifest)
    if files is None:
        files = event_files(config.events_dir)
    days = {f"dt={day}" for day in window_days(manifest["as_of"])}
    return [f for f in files if f.split("/", 1)[0] in days]


def earlier_tally(config: Config) -> Tally:
    """Return the per-file counts of the newest earlier summary (empty if there is none)."""
    return _newest(matrix_dir(config).glob("*.tally.json")) or {}


def count_files(config: Config, files: list[str], earlier: Tally) -> Tally:
    """Return the touchpoints of each of ``files`` by channel and by topic, reusing the
    ``earlier`` counts of the files they hold."""
    tally = {f: earlier[f] for f in files if f in earlier}
    new = [f for f in files if f not in tally]
    if not new:
        return tally
    root = config.events_dir
    scan = (
        pl.scan_parquet([root / f for f in new], include_file_paths="path")
        .select("path", "person_id", "channel", "topics")
        .filter(pl.col("person_id").is_not_null())
    )
    by_channel = scan.group_by("path", pl.col("channel").fill_null(OTHER)).len()
    by_topic = (
        scan.select("path", topic="topics")
        .explode("topic")
        .drop_nulls()
        .group_by("path", "topic")
        .len()
    )
    channels, topics = pl.collect_all([by_channel, by_topic])
    names = {str(root / f): f for f in new}
    for f in new:
        tally[f] = {"channels": {}, "topics": {}}
    for kind, frame in (("channels", channels), ("topics", topics)):
        for path, name, n in frame.iter_rows():
            tally[names[path]][kind][name] = n
    return tally


def summarise(tally: Tally, as_of_ms: int) -> dict[str, Any]:
    """Return the page's summary of per-file counts: per day and channel, topics, totals."""
    days = window_days(as_of_ms)
    index = {day: i for i, day in enumerate(days)}
    per_channel: dict[str, list[int]] = {}
    topics: dict[str, int] = {}
    for file, counts in tally.items():
        i = index[file.split("/", 1)[0].removeprefix("dt=")]
        for channel, n in counts["channels"].items():
            per_channel.setdefault(channel, [0] * len(days))[i] += n
        for topic, n in counts["topics"].items():
            topics[topic] = topics.get(topic, 0) + n
    ranked = sorted(per_channel.items(), key=lambda item: (-sum(item[1]), item[0]))
    return {
        "as_of": as_of_ms,
        "days": days,
        "channels": _fold_channels(ranked),
        "topics": [
            {"topic": t, "touchpoints": n}
            for t, n in sorted(topics.items(), key=lambda item: (-item[1], item[0]))[:TOP_TOPICS]
        ],
        "touchpoints": sum(sum(counts) for _, counts in ranked),
    }


def _fold_channels(ranked: list[tuple[str, list[int]]]) -> list[dict[str, Any]]:
    """Keep the MAX_CHANNELS biggest channels; sum the rest as OTHER."""
    kept = [(c, counts) for c, counts in ranked if c != OTHER][:MAX_CHANNELS]
    rest = [counts for c, counts in ranked if (c, counts) not in kept]
    if rest:
        kept.append((OTHER, [sum(day) for day in zip(*rest, strict=True)]))
    return [{"channel": c, "per_day": counts, "touchpoints": sum(counts)} for c, counts in kept]
