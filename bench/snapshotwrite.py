"""A build's snapshot write: the 1M rows and person state, as one chunk and in write chunks.

    python bench/snapshotwrite.py            # 5 runs of each, in turn
    python bench/snapshotwrite.py --runs 3

Reads the full build's rows and state that ``bench/incremental.py`` wrote (run it
first), then writes both with ``dmp.storage.parquetfiles.write_parquet_files`` (zstd,
the snapshot's row groups, fsynced) in turn: as one chunk each, as a sort or a collect
leaves a frame, and as ``in_write_chunks`` slices them, which the writer encodes in
parallel. Each written file must read back equal to what was written. The medians go to
``bench/results/snapshotwrite.jsonl``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from incremental import data_folder  # noqa: E402  (bench/ is the script's folder)
from runlog import append, commit  # noqa: E402

from dmp.matrix.snapshots import ROW_GROUP_ROWS  # noqa: E402
from dmp.storage import parquetfiles  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    data = data_folder(1_000_000, 20_000_000, 7)
    work = data.with_name(f"incremental-{data.name}-0.01-5")
    frames = [
        pl.read_parquet(work / n).rechunk() for n in ("out-full.parquet", "state-full.parquet")
    ]
    out = work / "write-test"
    finals = [out / "rows.parquet", out / "state.parquet"]
    keep = parquetfiles.in_write_chunks
    ways = {"one chunk": lambda frame: frame, "write chunks": keep}
    times: dict[str, list[float]] = {way: [] for way in ways}
    for run in range(args.runs):
        for way in list(ways)[run % 2 :] + list(ways)[: run % 2]:
            parquetfiles.in_write_chunks = ways[way]  # what write_parquet_files calls
            started = time.perf_counter()
            parquetfiles.write_parquet_files(frames, finals, ROW_GROUP_ROWS)  # type: ignore[arg-type]
            times[way].append(time.perf_counter() - started)
            parquetfiles.in_write_chunks = keep
            for frame, final in zip(frames, finals, strict=True):
                assert pl.read_parquet(final).equals(frame), f"{final} read back different"
            print(f"run {run + 1} {way:<13} {times[way][-1]:5.2f} s", flush=True)
    medians = {way: statistics.median(t) for way, t in times.items()}
    ratio = medians["write chunks"] / medians["one chunk"]
    print(
        f"\n{frames[0].height:,} rows and their state, {args.runs} runs, {os.cpu_count()} cores: "
        f"one chunk {medians['one chunk']:.2f} s, write chunks {medians['write chunks']:.2f} s "
        f"({ratio:.2f}×)"
    )
    append(
        "snapshotwrite",
        {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": commit(),
            "host": platform.node(),
            "medians": medians,
            "ratio": round(ratio, 3),
            "times": times,
        },
    )


if __name__ == "__main__":
    main()
