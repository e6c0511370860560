"""Parquet files written whole: what a write leaves, and the frames it writes in chunks."""

from __future__ import annotations

import polars as pl
import pyarrow.parquet as pq

from dmp.storage.parquetfiles import (
    WRITE_CHUNK_ROWS,
    in_write_chunks,
    tmp_name,
    write_parquet_files,
)


def _frame(rows: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "person_id": [f"{i:016x}" for i in range(rows)],
            "interests": [[{"topic": f"t{i % 7}", "weight": 1.0}] for i in range(rows)],
        }
    )


def test_a_frame_of_one_long_chunk_is_written_as_views_of_write_chunks():
    frame = _frame(WRITE_CHUNK_ROWS * 3 + 5)
    chunked = in_write_chunks(frame)
    assert chunked.n_chunks("all") == [4, 4]
    assert chunked.equals(frame)


def test_short_frames_and_frames_in_short_chunks_are_written_as_they_are():
    short = _frame(100)
    assert in_write_chunks(short) is short
    pieces = pl.concat([_frame(1000) for _ in range(WRITE_CHUNK_ROWS // 1000 * 3)], rechunk=False)
    assert in_write_chunks(pieces) is pieces


def test_a_written_frame_reads_back_the_same_in_the_row_groups_asked_for(tmp_path):
    frame = _frame(WRITE_CHUNK_ROWS * 3 + 5)
    table = frame.head(10).to_arrow()
    finals = [tmp_path / "rows.parquet", tmp_path / "small.parquet"]
    write_parquet_files([frame, table], finals, row_group_size=20_000)
    assert pl.read_parquet(finals[0]).equals(frame)
    sizes = [
        pq.ParquetFile(finals[0]).metadata.row_group(i).num_rows
        for i in range(pq.ParquetFile(finals[0]).metadata.num_row_groups)
    ]
    assert sizes == [20_000, 20_000, frame.height - 40_000]
    assert pl.read_parquet(finals[1]).equals(frame.head(10))
    assert not any(tmp_name(f).exists() for f in finals)
