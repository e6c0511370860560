"""Settings: defaults, then ``DMP_*`` environment variables, then explicit overrides."""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Config:
    """Every setting dmp reads; each field is also ``DMP_<FIELD>`` in the environment."""

    data_dir: Path = Path("dmp-data")
    redis_url: str = ""  # empty: start or attach to the embedded server under data_dir
    # Ingest worker.
    consumer: str = field(default_factory=lambda: f"{socket.gethostname()}-worker")
    read_count: int = 2000  # stream entries per XREADGROUP
    flush_events: int = 20000  # write a Parquet file once this many events wait ...
    flush_seconds: float = 2.0  # ... or once the oldest waiting event is this old
    lease_seconds: float = 15.0  # one ingest worker at a time holds the lease; a dead one loses it
    dedup_days: int = 7  # an event id seen within this many days is a replay
    timeline_cap: int = 500  # touchpoints kept per person in Redis (Parquet keeps all)
    # The worker's segment schedule (dmp.membership.schedule): a run for everyone every
    # segments_every seconds (windows and decay move people as time passes; 0 turns the
    # schedule off), the live lane for new data looked for every segments_latency seconds.
    segments_every: float = 60.0
    segments_latency: float = 0.5
    # Compaction (dmp.ingest.compaction), which the worker runs every compact_every_hours
    # (0: never; `dmp compact` runs one now): the event log's small files merged into
    # files of about compact_target_mb, erased rows dropped, day partitions older than
    # retain_events_days removed (0: kept for ever), and cookie-only persons not seen for
    # retain_anonymous_days forgotten (0: kept for ever).
    compact_every_hours: float = 24.0
    compact_target_mb: int = 128
    retain_events_days: int = 395
    retain_anonymous_days: int = 90
    # Collectors.
    cookie_domain: str = ""  # empty: host-only cookie on the collector's host
    proxy_hops: int = 0  # trusted reverse proxies in front of dmp (X-Forwarded-For)
    max_query_bytes: int = 8000  # pixel query strings beyond this are refused (gunicorn: 8190)
    max_event_bytes: int = 32 * 1024  # Segment spec: 32 KB per event or call
    max_batch_bytes: int = 500 * 1024  # Segment spec: 500 KB per batch
    # Which IAB TCF v2.2 purposes grant ads and analytics consent (collectors.tcfpurposes:
    # comma-separated terms that must all hold, alternatives joined by /), and dmp's
    # operator's TCF vendor id if it is a registered vendor (0: none, the site's own tool).
    tcf_ads: str = "1,3,4"
    tcf_analytics: str = "1,7/9"
    tcf_vendor_id: int = 0
    site_cache_seconds: float = 30.0  # write keys and site domains cached per process
    # Requests per second a client IP, and a write key, may send to the collect endpoints,
    # per collector process (0: no limit); a bucket holds a second's worth as a burst. Off
    # by default: behind a proxy not counted in proxy_hops every client has its address.
    rate_limit_ip: float = 0.0
    rate_limit_key: float = 0.0
    # Hits Redis cannot take wait in a spool file per collector process (DMP_DATA_DIR/spool)
    # of at most this many bytes (about 400 bytes a hit); beyond it they are lost, counted.
    spool_max_bytes: int = 256 * 1024 * 1024
    # A collector process sends its hits to Redis together, every this many ms while they
    # come (one write and one wake-up of Redis for all, not one each); a process killed
    # outright loses what it held that long. 0: each request sends its own hits.
    collect_send_ms: float = 2.0
    # Pull API: the data provider's name in OpenRTB user.data (empty: the request's host).
    provider_domain: str = ""
    # /metrics: a bearer token a scrape must send (empty: none), and whether only scrapes
    # from this host (127.0.0.1, ::1) are answered (1) or any (0).
    metrics_token: str = ""
    metrics_loopback_only: int = 0
    # Which engine runs matrix builds and segment runs: polars (in this process) or spark
    # (dmp.matrix.spark); the Spark master URL (empty: local[*]); and the URI Spark reads
    # the event log from and writes its exports under (empty: the data dir; s3a://, hdfs://).
    engine: str = "polars"
    spark_master: str = ""
    spark_data_uri: str = ""
    # Ingest in partitions (docs/partitions.md): hits spread over this many streams, each
    # leased by one worker process; changing it needs the workers stopped and drained.
    stream_partitions: int = 1

    @property
    def events_dir(self) -> Path:
        """Return the root of the Parquet event log."""
        return self.data_dir / "events"


ENGINES = ("polars", "spark")


def check_engine(config: Config) -> None:
    """Raise ValueError unless ``engine`` is one dmp knows."""
    if config.engine not in ENGINES:
        raise ValueError(f"DMP_ENGINE must be polars or spark, not {config.engine!r}")


def _coerce(kind: Any, value: Any) -> Any:
    if kind in (int, "int"):
        return int(value)
    if kind in (float, "float"):
        return float(value)
    if kind in (Path, "Path"):
        return Path(value)
    return str(value)


def load_config(
    overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """Return the Config built from defaults, ``DMP_*`` variables and ``overrides``."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        name = f"DMP_{f.name.upper()}"
        if name in env and env[name] != "":
            values[f.name] = _coerce(f.type, env[name])
    for key, value in (overrides or {}).items():
        name = key.lower()
        if name not in {f.name for f in dataclasses.fields(Config)}:
            raise ValueError(f"unknown setting {key!r}")
        kind = next(f.type for f in dataclasses.fields(Config) if f.name == name)
        values[name] = _coerce(kind, value)
    return Config(**values)
