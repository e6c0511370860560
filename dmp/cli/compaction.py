"""`dmp compact`: a compaction now (the worker runs one every DMP_COMPACT_EVERY_HOURS)."""

from __future__ import annotations

import dataclasses
import sys

import click

from dmp.cli.context import Context, pass_ctx, print_json
from dmp.ingest import compaction
from dmp.storage.locks import Busy


@click.command("compact")
@click.option(
    "--target-mb",
    type=click.IntRange(min=1),
    help="Merge each day's files into files of about this size (default: DMP_COMPACT_TARGET_MB).",
)
@click.option(
    "--wait",
    "wait_seconds",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds to wait for a compaction already running (the worker's) to end.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@pass_ctx
def compact_cmd(obj: Context, target_mb: int | None, wait_seconds: float, as_json: bool) -> None:
    """Compact the event log and apply erasures and retention.

    Merges each day's small event-log files into a few files; drops the rows of pending
    erasures (`dmp forget`) from every Parquet file under the data dir (event log, matrix
    snapshots, segment runs); removes day partitions older than DMP_RETAIN_EVENTS_DAYS
    (aggregate counts stay); and forgets cookie-only persons not seen for
    DMP_RETAIN_ANONYMOUS_DAYS. Safe beside a running worker, builds and runs: files are
    swapped whole, under the lock builds and runs take. The next matrix build is a full one.
    """
    r = obj.redis
    events = obj.config.events_dir
    total = len(list(events.glob("dt=*/part-*.parquet"))) + sum(
        1 for p in obj.config.data_dir.rglob("*.parquet") if not p.is_relative_to(events)
    )
    target = target_mb << 20 if target_mb else None
    try:
        with click.progressbar(length=total, label="compacting", file=sys.stderr) as bar:
            report = compaction.compact(
                r, obj.config, target_bytes=target, wait_seconds=wait_seconds, progress=bar.update
            )
    except Busy as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        print_json(dataclasses.asdict(report))
        return
    click.echo(compaction.describe(report))
