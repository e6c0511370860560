"""Where destinations' holdings live in the data folder, and which file is current.

A destination's holding of a segment (what it acknowledged, ``exporters.holdings``) is a
Parquet file in ``DMP_DATA_DIR/exports/<destination>/<segment>/``; the sync's checkpoint
in Redis (``keyspace.destination(name, "sync:<segment>")``, field ``held``) names the
current one. ``exporters.sync`` writes them; the access export (``dmp.privacy.export``)
reads which destinations hold a person. One place for that layout.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import redis

from dmp.config import Config
from dmp.storage import keyspace


def exports_dir(config: Config) -> Path:
    """Return the folder holding every destination's holdings and plans."""
    return config.data_dir / "exports"


def segment_folder(config: Config, destination: str, segment: str) -> Path:
    """Return the folder of one destination's holding and plan of one segment."""
    return exports_dir(config) / destination / segment


def sync_key(destination: str, segment: str) -> str:
    """Return the Redis hash of a destination's sync of a segment (its checkpoint)."""
    return keyspace.destination(destination, f"sync:{segment}")


def held_file(r: redis.Redis, config: Config, destination: str, segment: str) -> Path | None:
    """Return the destination's current holding of the segment (None before its first
    sync)."""
    name = r.hget(sync_key(destination, segment), "held")
    return segment_folder(config, destination, segment) / name if name else None


def holdings(r: redis.Redis, config: Config) -> Iterator[tuple[str, str, Path]]:
    """Yield (destination, segment, file) of every current holding on disk."""
    for destination in sorted(r.smembers(keyspace.DESTINATIONS)):
        folder = exports_dir(config) / destination
        if not folder.is_dir():
            continue
        for segment_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            path = held_file(r, config, destination, segment_dir.name)
            if path is not None and path.exists():
                yield destination, segment_dir.name, path
