"""Parquet files written so that no reader ever sees half of one.

Each file is written under a temporary name, fsynced, renamed into place, and its folder
fsynced: after a crash a file is either whole or absent (a ``.<name>.tmp`` may be left).
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq


def tmp_name(path: Path) -> Path:
    """Return the temporary name a file is written under before it is renamed."""
    return path.with_name(f".{path.name}.tmp")


def write_parquet_files(
    tables: list[pa.Table | pl.DataFrame], finals: list[Path], row_group_size: int | None = None
) -> None:
    """Write each table to a temp file, fsync all, then rename them into place
    (``row_group_size`` rows per row group: the writer's default if None). A polars
    frame is written by polars (about twice as quick as pyarrow for nested columns)."""
    for table, final in zip(tables, finals, strict=True):
        final.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp_name(final), "wb") as fh:
            if isinstance(table, pl.DataFrame):
                table.write_parquet(fh, compression="zstd", row_group_size=row_group_size)
            else:
                pq.write_table(table, fh, compression="zstd", row_group_size=row_group_size)
            fh.flush()
            os.fsync(fh.fileno())
    for final in finals:
        os.replace(tmp_name(final), final)
    for directory in {f.parent for f in finals}:
        sync_dir(directory)


def remove_written(final: Path) -> None:
    """Remove a file written by :func:`write_parquet_files` and its temp file, if there."""
    for path in (final, tmp_name(final)):
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            pass  # never written (a file where its folder should be holds nothing of it)


def sync_dir(directory: Path) -> None:
    """Make a folder's renames durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    """Write a small text file whole or not at all (temp name, fsync, rename)."""
    with open(tmp_name(path), "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp_name(path), path)


def accepts_writes(directory: Path, size: int = 1 << 16) -> bool:
    """Return whether ``directory`` takes a small file now (a cheap check before a retry)."""
    probe = directory / f".probe-{os.getpid()}.tmp"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"\0" * size)
            fh.flush()
            os.fsync(fh.fileno())
        return True
    except OSError:
        return False
    finally:
        try:
            probe.unlink(missing_ok=True)
        except OSError:
            pass
