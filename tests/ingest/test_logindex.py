"""The event log's person index: which files hold whose events."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from dmp.ingest import logindex
from dmp.ingest.logindex import LogIndex
from dmp.matrix import sources


def write(root: Path, name: str, persons: list[str | None]) -> str:
    """Write an event file holding ``persons`` (one row each); return its relative path."""
    path = root / "dt=2026-11-30" / f"part-{name}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pl.DataFrame({"person_id": persons, "n": range(len(persons))})
    frame.cast({"person_id": pl.Utf8}).write_parquet(path)
    return str(path.relative_to(root))


def test_it_names_exactly_the_files_holding_a_person(tmp_path):
    a = write(tmp_path, "a", ["p1", "p2", "p2", None])
    b = write(tmp_path, "b", ["p2", "p3"])
    c = write(tmp_path, "c", [None, None])
    index = LogIndex(tmp_path)
    assert index.update([a, b, c]) == [a, b, c] and len(index) == 3
    assert index.files_of(["p1"]) == [a]
    assert index.files_of(["p2"]) == [a, b]
    assert index.files_of(["p3", "p1"]) == [a, b]
    assert index.files_of(["p9"]) == [] and index.files_of([]) == []
    assert index.pairs.height == 4  # one pair per person and file; no rows without a person


def test_an_update_indexes_the_new_files_and_forgets_the_gone(tmp_path):
    index = LogIndex(tmp_path)
    a, b = write(tmp_path, "a", ["p1"]), write(tmp_path, "b", ["p1", "p2"])
    index.update([a, b])
    merged = write(tmp_path, "merged", ["p1", "p1", "p2"])  # as a compaction swaps files in
    assert index.update([merged]) == [merged]
    assert index.files_of(["p1", "p2"]) == [merged] and len(index) == 1
    assert index.update([merged]) == []  # nothing new: nothing read again


def test_a_file_gone_before_it_is_read_leaves_the_index_as_it_was(tmp_path):
    """No file is left numbered without its pairs (that would hide a person's events)."""
    index = LogIndex(tmp_path)
    a = write(tmp_path, "a", ["p1"])
    index.update([a])
    b = write(tmp_path, "b", ["p2"])
    with pytest.raises(OSError):
        index.update([a, b, "dt=2026-11-30/part-vanished.parquet"])
    assert len(index) == 1 and index.files_of(["p2"]) == []
    assert index.update([a, b]) == [b] and index.files_of(["p2"]) == [b]


def test_many_files_in_batches_and_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(logindex, "BATCH", 3)
    monkeypatch.setattr(logindex, "MAX_CHUNKS", 4)
    index = LogIndex(tmp_path)
    files = [write(tmp_path, f"{i:03d}", [f"p{i}", f"p{i % 7}", "everyone"]) for i in range(20)]
    for start in range(0, 20, 2):  # ten updates of two files each
        index.update(files[: start + 2])
    assert index.pairs.n_chunks() <= 4 + 1
    assert index.files_of(["everyone"]) == files
    assert index.files_of(["p3"]) == sorted({files[3], files[10], files[17]})
    assert index.files_of(["p15"]) == [files[15]]
    at_once = LogIndex(tmp_path)  # seven batches in one update
    at_once.update(files)
    assert at_once.files_of(["p3"]) == index.files_of(["p3"])
    assert all(at_once.files_of([f"p{i}"])[-1] == files[i] for i in range(7, 20))


def test_the_log_is_listed_as_a_glob_lists_it(tmp_path):
    """Only dt=*/part-*.parquet: not a flush's hidden temporary file, not other folders."""
    events = tmp_path / "events"
    assert sources.event_files(events) == []  # no log yet
    wanted = [write(events, name, ["p1"]) for name in ("b", "a")]
    (events / "dt=2026-11-30" / ".part-c.parquet.tmp").write_bytes(b"")
    (events / "dt=2026-11-30" / "notes.txt").write_bytes(b"")
    (events / "spool").mkdir()
    (events / "spool" / "part-x.parquet").write_bytes(b"")
    (events / "dt=2026-11-29").mkdir()
    globbed = sorted(str(p.relative_to(events)) for p in events.glob("dt=*/part-*.parquet"))
    assert sources.event_files(events) == globbed == sorted(wanted)
