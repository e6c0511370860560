"""The file destination: audiences as CSV, NDJSON or Parquet files in a folder.

For systems that take files (an SFTP drop, a data warehouse's stage, a CRM's import):
under ``<folder>/<segment>/`` each sync writes

- ``deltas/<session>-<op>-<batch>.<ext>``: the rows of every batch, with an ``op``
  column (``add`` or ``remove``), as they are sent;
- ``snapshot-<session>.<ext>`` once the sync is complete: every row the folder holds
  for the segment, and ``LATEST`` naming it (the last three snapshots are kept).

Every file is written under a temporary name, fsynced and renamed: a reader never sees
half a file. Options: ``folder`` (required), ``format`` (``csv``, ``ndjson`` or
``parquet``; csv by default), ``channel`` (the consent the files' use needs: ``ads`` by
default, or ``email``), ``batch_size`` (rows per delta file, 50,000 by default).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from itertools import islice
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq

from dmp.membership.audience import Contact
from dmp.records import Category
from dmp.storage.parquetfiles import accepts_writes, sync_dir, tmp_name, write_text
from exporters.destination import Batch, Outcome, Row, Settings
from exporters.identifiers import sha256_hex

FORMATS = {"csv": "csv", "ndjson": "ndjson", "parquet": "parquet"}
KEEP_SNAPSHOTS = 3
CHUNK = 10_000  # rows per write


class FileDestination:
    """Writes each segment's rows to files in a folder."""

    channel: Category = Category.ADS
    columns: ClassVar[tuple[str, ...]] = (
        "person_id",
        "email",
        "email_sha256",
        "phone",
        "first_name",
        "last_name",
        "company",
        "job_title",
        "country",
    )
    key: ClassVar[int | None] = 0
    batch_size: int = 50_000
    replaces: ClassVar[bool] = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.folder = Path(settings.option("folder"))
        self.format = settings.option("format", "csv")
        self.channel = Category(settings.option("channel", Category.ADS.value))
        self.batch_size = int(settings.option("batch_size", str(FileDestination.batch_size)))

    @staticmethod
    def check(settings: Settings) -> list[str]:
        """Return what is wrong with the options."""
        problems = []
        if not settings.option("folder"):
            problems.append("option folder: required (where the files go)")
        if settings.option("format", "csv") not in FORMATS:
            problems.append(f"option format: one of {', '.join(FORMATS)}")
        if settings.option("channel", "ads") not in (Category.ADS.value, Category.EMAIL.value):
            problems.append("option channel: ads or email")
        size = settings.option("batch_size", "50000")
        if not size.isascii() or not size.isdigit() or not 1 <= int(size) <= 1_000_000:
            problems.append("option batch_size: a whole number from 1 to 1000000")
        return problems

    def encode(self, contacts: Sequence[Contact]) -> list[Row | None]:
        """Return each contact's row (None without an email or phone to reach them by)."""
        out: list[Row | None] = []
        for c in contacts:
            if not (c.email or c.phones):
                out.append(None)
                continue
            phone = c.phones[0] if c.phones else ""
            hashed = sha256_hex(c.email) if c.email else ""
            out.append(
                (c.person_id, c.email, hashed, phone, c.first_name, c.last_name)
                + (c.company, c.job_title, c.country)
            )
        return out

    def send(self, batch: Batch) -> Outcome:
        """Write the batch as a delta file."""
        name = f"{batch.session}-{batch.op.value}-{batch.number:05d}.{self.format}"
        path = self.folder / batch.segment_id / "deltas" / name
        header = ("op", *self.columns)
        write_rows(path, header, ((batch.op.value, *row) for row in batch.rows), self.format)
        return Outcome()

    def snapshot(self, segment_id: str, session: str, rows: Iterable[Row]) -> None:
        """Write the segment's whole holding and point LATEST at it."""
        folder = self.folder / segment_id
        path = folder / f"snapshot-{session}.{self.format}"
        write_rows(path, self.columns, rows, self.format)
        write_text(folder / "LATEST", path.name + "\n")
        sync_dir(folder)
        for old in sorted(folder.glob(f"snapshot-*.{self.format}"))[:-KEEP_SNAPSHOTS]:
            old.unlink(missing_ok=True)

    def test(self) -> str:
        """Check that the folder takes files."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if not accepts_writes(self.folder):
            raise OSError(f"{self.folder} does not take files")
        return f"folder {self.folder} takes files ({self.format})"


def write_rows(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]], fmt: str) -> None:
    """Write rows to ``path`` in a format, whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    rows = iter(rows)
    try:
        with open(tmp, "wb") as fh:
            if fmt == "parquet":
                _parquet(fh, header, rows)
            else:
                _text(fh, header, rows, fmt)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_dir(path.parent)


def _text(fh: io.BufferedWriter, header: Sequence[str], rows: Iterable[Sequence[str]], fmt: str):
    out = io.TextIOWrapper(fh, encoding="utf-8", newline="", write_through=True)
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    else:
        for row in rows:
            out.write(json.dumps(dict(zip(header, row, strict=True)), ensure_ascii=False) + "\n")
    out.flush()
    out.detach()


def _parquet(fh: io.BufferedWriter, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    schema = pa.schema([(name, pa.string()) for name in header])
    with pq.ParquetWriter(fh, schema, compression="zstd") as writer:
        while chunk := list(islice(rows, CHUNK)):
            columns = list(zip(*chunk, strict=True))
            writer.write_batch(
                pa.RecordBatch.from_arrays([pa.array(c) for c in columns], schema=schema)
            )
