"""What the audience pull API reads of a segment run's files: one audience's person ids in
a members file, a page at a time from any person id on, and the net changes between two
runs from their change files.

A members file is sorted by segment and person id (:mod:`dmp.membership.runs`), so a page
is the persons after the last one served up to a bound found first in the file alone:
the page's end (and the next cursor) is known before a single row is read from Redis or
sent. Row groups whose statistics put them outside the audience or before the position
are skipped unread.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dmp.config import Config
from dmp.membership.results import segments_dir

BATCH = 65_536  # rows read from a members file at a time
CHANGE_FILES = "changes/dt=*/changes-*.parquet"  # as dmp.membership.runs writes them


class MemberFile:
    """One run's members file, held open: should a run's prune remove it meanwhile, an
    open file stays readable to the end of the page (POSIX)."""

    def __init__(self, path: Path) -> None:
        self.file = pq.ParquetFile(path)

    def close(self) -> None:
        """Close the file."""
        self.file.close()

    def _groups(self, sid: str, after: str) -> list[int]:
        """Return the row groups that may hold members of ``sid`` past ``after``."""
        meta, out = self.file.metadata, []
        names = self.file.schema_arrow.names
        seg_at, pid_at = names.index("segment_id"), names.index("person_id")
        for i in range(meta.num_row_groups):
            seg = meta.row_group(i).column(seg_at).statistics
            pid = meta.row_group(i).column(pid_at).statistics
            if seg is not None and seg.has_min_max:
                if seg.max < sid or seg.min > sid:
                    continue
                whole = seg.min == seg.max == sid and pid is not None and pid.has_min_max
                if whole and pid.max <= after:
                    continue
            out.append(i)
        return out

    def ids(self, sid: str, after: str = "") -> Iterator[pa.Array]:
        """Yield the person ids of ``sid`` after ``after``, in order, a batch at a time."""
        groups = self._groups(sid, after)
        if not groups:
            return
        for batch in self.file.iter_batches(
            batch_size=BATCH, row_groups=groups, columns=["segment_id", "person_id"]
        ):
            segments, pids = batch.column(0), batch.column(1)
            mask = pc.equal(segments, sid)
            if after:
                mask = pc.and_(mask, pc.greater(pids, after))
            found = pids.filter(mask)
            if len(found):
                yield found
            if len(segments) and segments[-1].as_py() > sid:  # sorted: the audience ended
                return

    def bound(self, sid: str, after: str, limit: int) -> tuple[str, bool]:
        """Return the last person id of the page of ``limit`` persons after ``after`` ('' for
        none), and whether more persons follow it."""
        seen, end = 0, ""
        for found in self.ids(sid, after):
            if seen == limit:
                return end, True
            take = min(len(found), limit - seen)
            end, seen = found[take - 1].as_py(), seen + take
            if take < len(found):
                return end, True
        return end, False

    def pids(self, sid: str, after: str, end: str, chunk: int) -> Iterator[list[str]]:
        """Yield the person ids of ``sid`` in (after, end], ``chunk`` at a time."""
        if not end:
            return
        pending: list[str] = []
        for found in self.ids(sid, after):
            last = found[-1].as_py() >= end
            if last:
                found = found.filter(pc.less_equal(found, end))
            pending.extend(found.to_pylist())
            at = 0
            while len(pending) - at >= chunk:
                yield pending[at : at + chunk]
                at += chunk
            pending = pending[at:]
            if last:
                break
        if pending:
            yield pending


def change_files(config: Config, since_run: str, run: str) -> list[Path]:
    """Return the change files of the runs after ``since_run`` up to ``run``.

    Run ids begin with their as-of time (``YYYYMMDDTHHMMSSmmmZ-…``), and a change file's
    day folder is that time's day, so whole days outside the span are not listed.
    """
    if run <= since_run:
        return []
    first, last = _day(since_run), _day(run)
    out = []
    for folder in sorted((segments_dir(config) / "changes").glob("dt=*")):
        if not first <= folder.name[len("dt=") :] <= last:
            continue
        for path in folder.glob("changes-*.parquet"):
            if since_run < path.stem[len("changes-") :] <= run:
                out.append(path)
    return sorted(out)


def _day(run_id: str) -> str:
    return f"{run_id[:4]}-{run_id[4:6]}-{run_id[6:8]}"


def net_changes(config: Config, sid: str, since_run: str, run: str) -> pl.DataFrame:
    """Return ``person_id, change`` (entered | left), sorted by person id: each person
    whose membership of ``sid`` differs between the two runs, and how.

    Entered and left alternate for a person, so the difference of their counts over the
    runs between is the net change (-1, 0 or 1), whatever order the runs are read in.
    """
    files = change_files(config, since_run, run)
    if not files:
        return pl.DataFrame(schema={"person_id": pl.Utf8, "change": pl.Utf8})
    rows = pl.scan_parquet(files).filter(pl.col("segment_id") == sid)
    net = rows.group_by("person_id").agg(
        ((pl.col("change") == "entered").cast(pl.Int32) * 2 - 1).sum().alias("net")
    )
    return (
        net.filter(pl.col("net") != 0)
        .select("person_id", change=pl.when(pl.col("net") > 0).then(pl.lit("entered")))
        .with_columns(pl.col("change").fill_null("left"))
        .sort("person_id")
        .collect()
    )
