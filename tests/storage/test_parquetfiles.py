"""Parquet files written whole: what a write leaves behind."""

from __future__ import annotations

import polars as pl
import pyarrow.parquet as pq

from dmp.storage.parquetfiles import tmp_name, write_parquet_files


def test_written_frames_and_tables_read_back_the_same_in_the_row_groups_asked_for(tmp_path):
    frame = pl.DataFrame(
        {
            "person_id": [f"{i:016x}" for i in range(50_005)],
            "interests": [[{"topic": f"t{i % 7}", "weight": 1.0}] for i in range(50_005)],
        }
    )
    table = frame.head(10).to_arrow()
    finals = [tmp_path / "rows.parquet", tmp_path / "small.parquet"]
    write_parquet_files([frame, table], finals, row_group_size=20_000)
    assert pl.read_parquet(finals[0]).equals(frame)
    meta = pq.ParquetFile(finals[0]).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sizes == [20_000, 20_000, 10_005]
    assert pl.read_parquet(finals[1]).equals(frame.head(10))
    assert not any(tmp_name(f).exists() for f in finals)
