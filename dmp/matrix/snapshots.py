"""Matrix snapshots on disk: a build's rows, state, history, funnel and manifest under
``<data dir>/matrix/``, each written whole (``LATEST`` names the newest, and moves last)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from dmp.config import Config
from dmp.storage.parquetfiles import sync_dir, write_parquet_files, write_text

# Rows are sorted by person_id: row groups of this size let a reader of one person's row
# (the UI's person page, the admin API) skip all but one group by its statistics (~30 ms
# at 1M persons instead of ~800 ms for the one group pyarrow writes by default).
ROW_GROUP_ROWS = 65_536


def matrix_dir(config: Config) -> Path:
    """Return the folder holding the matrix snapshots."""
    return config.data_dir / "matrix"


def latest_snapshot(config: Config) -> Path | None:
    """Return the newest snapshot, or None before the first build."""
    pointer = matrix_dir(config) / "LATEST"
    if not pointer.exists():
        return None
    path = matrix_dir(config) / pointer.read_text().strip()
    return path if path.exists() else None


def latest_build(config: Config) -> tuple[Path, dict]:
    """Return the newest snapshot and its manifest (LookupError before the first build)."""
    snapshot = latest_snapshot(config)
    if snapshot is None:
        raise LookupError("no matrix yet: run `dmp matrix build` first")
    return snapshot, json.loads(manifest_path(snapshot).read_text(encoding="utf-8"))


def snapshot_row(config: Config, pid: str) -> dict | None:
    """Return one person's row of the latest snapshot (None before a build has them)."""
    path = latest_snapshot(config)
    if path is None:
        return None
    rows = pl.scan_parquet(path).filter(pl.col("person_id") == pid).collect()
    return rows.row(0, named=True) if rows.height else None


# An incremental build writes the state of the persons it refolded as a part of its own,
# the earlier parts kept (``state_parts`` in its manifest); past this many parts the
# state is written whole again.
MAX_STATE_PARTS = 8


def state_parts(manifest: dict) -> list[str]:
    """Return the files holding a build's person state, oldest first: a person's row is
    in the newest part holding them (a build before parts: its one ``state`` file)."""
    return manifest.get("state_parts") or [manifest["state"]]


def scan_state(folder: Path, manifest: dict) -> pl.LazyFrame:
    """Return a build's person state (``segments.personstate``): one row for each person
    of its rows, from the newest of its state parts that holds them."""
    parts = state_parts(manifest)
    if len(parts) == 1:
        return pl.scan_parquet(folder / parts[0])
    frames = [
        pl.scan_parquet(folder / part).with_columns(pl.lit(i, pl.UInt16).alias("_part"))
        for i, part in enumerate(parts)
    ]
    persons = pl.scan_parquet(folder / manifest["snapshot"]).select("person_id")
    return (
        pl.concat(frames)
        .filter(pl.col("_part") == pl.col("_part").max().over("person_id"))
        .drop("_part")
        .join(persons, on="person_id", how="semi")  # not those merged away or erased since
    )


def write_snapshot(
    config: Config,
    rows: pl.DataFrame,
    as_of_ms: int,
    funnel: dict,
    state: pl.DataFrame,
    history: pl.DataFrame,
    manifest: dict,
) -> Path:
    """Write the snapshot with its state, history, funnel and manifest, then point LATEST
    at it. Every file is whole or absent; LATEST moves last.

    ``state`` is this build's part of the person state; ``manifest["state_parts"]``, if
    given, the earlier parts it goes on from (see :func:`scan_state`)."""
    folder = matrix_dir(config)
    stamp = datetime.fromtimestamp(as_of_ms / 1000, UTC).strftime("%Y%m%dT%H%M%S%f")[:-3]
    path = folder / f"matrix-{stamp}Z-{time.time_ns() % 10**9:09d}.parquet"
    sidecars = [path.with_suffix(".state.parquet"), path.with_suffix(".history.parquet")]
    write_parquet_files([rows, state, history], [path, *sidecars], ROW_GROUP_ROWS)
    manifest = {**manifest, "snapshot": path.name, "state": sidecars[0].name}
    manifest["state_parts"] = [*manifest.get("state_parts", []), sidecars[0].name]
    manifest["history"] = sidecars[1].name
    write_text(funnel_path(path), json.dumps(funnel, indent=1))
    write_text(manifest_path(path), json.dumps(manifest))
    write_text(folder / "LATEST", path.name + "\n")
    sync_dir(folder)
    _prune(folder)
    return path


KEEP_SNAPSHOTS = 5  # the worker's schedule builds often: older snapshots are removed


def _prune(folder: Path) -> None:
    """Remove every file of all but the KEEP_SNAPSHOTS last written snapshots (a build
    as of an earlier time is newer than its name says), but the state parts those still
    read, and those parts once no kept snapshot reads them."""
    snapshots = sorted(folder.glob("matrix-*Z-*[0-9].parquet"), key=lambda p: p.stat().st_mtime)
    read = set()
    for kept in snapshots[-KEEP_SNAPSHOTS:]:
        if manifest_path(kept).exists():
            read |= set(state_parts(json.loads(manifest_path(kept).read_text(encoding="utf-8"))))
    for old in snapshots[:-KEEP_SNAPSHOTS]:
        for part in folder.glob(old.stem + ".*"):
            if part.name not in read:
                part.unlink(missing_ok=True)
    for part in folder.glob("matrix-*.state.parquet"):  # parts of snapshots removed before
        if part.name not in read and not part.with_suffix("").with_suffix(".parquet").exists():
            part.unlink(missing_ok=True)


def manifest_path(snapshot: Path) -> Path:
    """Return where a snapshot's manifest (inputs, for incremental builds) is kept."""
    return snapshot.with_suffix(".manifest.json")


def funnel_path(snapshot: Path) -> Path:
    """Return where the funnel of a snapshot is kept."""
    return snapshot.with_suffix(".funnel.json")


def latest_funnel(config: Config) -> dict | None:
    """Return the funnel of the latest build, or None before the first build."""
    path = latest_snapshot(config)
    if path is None or not funnel_path(path).exists():
        return None
    return json.loads(funnel_path(path).read_text(encoding="utf-8"))


def iso_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")
