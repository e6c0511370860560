"""Matrix commands: the scoring model, the content catalog, matrix build, export and show."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import click
import polars as pl

from collectors.eventtime import EventTimeError, parse_event_time
from dmp.cli.context import Context, bar, fail, pass_ctx, print_json
from dmp.matrix import builds, snapshots, sources
from dmp.membership.runs import run_lock
from dmp.people import lifecycle
from dmp.storage import keyspace
from dmp.storage.csvfile import write_csv
from dmp.storage.locks import Busy
from segments.content import parse_catalog
from segments.matrix import MOMENTS, by_weight, moments_as_timestamps
from segments.rules import RuleError
from segments.scoring import default_model_text, parse_model

T = TypeVar("T")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {exc}")
        raise AssertionError from exc  # unreachable: _fail raises


@click.group("scoring")
def scoring_group() -> None:
    """The lead-scoring model (fit and decaying activity rules, MQL and recycling)."""


def _apply_yaml(obj: Context, file: Path, key: str, parse: Callable[[str, str], T]) -> T:
    """Check a YAML file with ``parse`` and store its text under ``key``; exit 2 if bad."""
    text = _read_text(file)
    try:
        parsed = parse(text, str(file))
    except RuleError as exc:
        fail(str(exc) if exc.path == str(file) else f"{file}: {exc}")
        raise AssertionError from exc  # unreachable: _fail raises
    obj.redis.set(key, text)
    return parsed


@scoring_group.command("apply")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def scoring_apply(obj: Context, file: Path) -> None:
    """Check a scoring model (YAML) and make it the one builds use."""
    model = _apply_yaml(obj, file, keyspace.SCORING_MODEL, parse_model)
    click.echo(
        f"applied {file}: {len(model.fit)} fit rules, {len(model.activity)} activity rules, "
        f"half-life {model.half_life_days:g} days; the next `dmp matrix build` uses it"
    )


@scoring_group.command("show")
@pass_ctx
def scoring_show(obj: Context) -> None:
    """Print the model in use (the default one until one is applied)."""
    click.echo(obj.redis.get(keyspace.SCORING_MODEL) or default_model_text(), nl=False)


@click.group("content")
def content_group() -> None:
    """The content catalog that next-content picks come from."""


@content_group.command("apply")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def content_apply(obj: Context, file: Path) -> None:
    """Check a content catalog (YAML list of id, title, url, topics, stage) and use it."""
    items = _apply_yaml(obj, file, keyspace.CONTENT_CATALOG, parse_catalog)
    click.echo(f"applied {file}: {len(items)} content items")


@click.group("matrix")
def matrix_group() -> None:
    """The touchpoint matrix: one row per person."""


def _as_of(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_event_time(value)
    except EventTimeError as exc:
        fail(f"--as-of: {value!r} {exc} (such as 2026-11-01T12:00:00Z, from 1970 to 2099)")
        raise AssertionError from exc  # unreachable: _fail raises


@matrix_group.command("build")
@click.option("--as-of", "as_of", help="Score and count as of this ISO time (default: now).")
@click.option(
    "--incremental",
    is_flag=True,
    help="Refold only persons touched since the last build (same rows as a full build).",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was built as JSON.")
@pass_ctx
def matrix_build(obj: Context, as_of: str | None, incremental: bool, as_json: bool) -> None:
    """Build the matrix from Redis and the event log into a new Parquet snapshot."""
    when = _as_of(as_of)
    r = obj.redis
    keys = max(1, r.dbsize())  # an upper bound of the persons to read
    try:
        # The worker's segment schedule builds too: one build at a time.
        with (
            run_lock(r, wait_seconds=120),
            click.progressbar(length=keys, label="reading persons", file=sys.stderr) as bar,
        ):
            result = builds.build(r, obj.config, when, progress=bar.update, incremental=incremental)
    except RuleError as exc:
        fail(f"stored model or catalog: {exc}")
    except Busy as exc:
        raise click.ClickException(str(exc)) from None
    summary = {
        "snapshot": str(result.path),
        "as_of": datetime.fromtimestamp(result.as_of_ms / 1000, UTC).isoformat(),
        "persons": result.persons,
        "touchpoints": result.touchpoints,
        "stage_changes": result.stage_changes,
        "seconds": round(result.seconds, 2),
        "engine": result.engine,
    }
    if as_json:
        print_json(summary)
        return
    click.echo(
        f"{result.persons:,} persons from {result.touchpoints:,} touchpoints as of "
        f"{summary['as_of']}, {result.stage_changes} stage changes, "
        f"{result.seconds:.1f} s on {result.engine} -> {result.path}"
    )


def _snapshot(obj: Context) -> Path:
    path = snapshots.latest_snapshot(obj.config)
    if path is None:
        fail("no matrix yet: run `dmp matrix build` first")
    assert path is not None
    return path


@matrix_group.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@pass_ctx
def matrix_export(obj: Context, output: Path) -> None:
    """Write the latest snapshot out: .parquet with its moments as UTC timestamps, .csv
    with them in ISO 8601 and lists as JSON."""
    source = _snapshot(obj)
    suffix = output.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        fail(f"{output}: give a .parquet or .csv file name")
    frame = moments_as_timestamps(pl.read_parquet(source))
    if suffix == ".parquet":
        frame.write_parquet(output, compression="zstd")
    else:
        frame = frame.with_columns(
            pl.col(n).dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ") for n in MOMENTS if n in frame.columns
        )
        nested = [n for n, t in frame.schema.items() if isinstance(t, pl.List | pl.Struct)]
        write_csv(
            frame.with_columns(
                pl.col(n).map_elements(_json_cell, return_dtype=pl.Utf8) for n in nested
            ),
            output,
        )
    click.echo(f"exported {source.name} to {output}")


def _json_cell(value: object) -> str:
    return json.dumps(value.to_list() if isinstance(value, pl.Series) else value)


@matrix_group.command("show")
@click.argument("person_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@pass_ctx
def matrix_show(obj: Context, person_id: str, as_json: bool, limit: int) -> None:
    """Show one person's matrix row, why they have their score, and their timeline."""
    from dmp.people.profiles import follow

    path = _snapshot(obj)
    pid = follow(obj.redis, person_id)
    rows = pl.scan_parquet(path).filter(pl.col("person_id") == pid).collect()
    if rows.is_empty():
        fail(f"no person {person_id} in {path.name}")
    row = rows.row(0, named=True)
    timeline = (
        sources.read_touchpoints(obj.config.events_dir, sources.merge_map(obj.redis))
        .filter(pl.col("person_id") == pid)
        .sort("timestamp", descending=True)
        .head(limit)
        .collect()
    )
    stages = lifecycle.parse_records(obj.redis.lrange(keyspace.person(pid, "stages"), 0, -1))
    if as_json:
        print_json({"row": row, "stages": stages, "timeline": timeline.to_dicts()})
        return
    _print_row(row, stages, timeline)


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def _print_row(row: dict, stages: list[dict], timeline: pl.DataFrame) -> None:
    when = _when

    click.echo(
        f"person {row['person_id']}  tier {row['tier']}  stage {row['stage']} "
        f"since {when(row['stage_since'])}"
    )
    click.echo(
        f"score {row['score']:g} = fit {row['fit_score']:g} + activity {row['activity_score']:g}"
    )
    for part in by_weight(row["score_breakdown"]):
        click.echo(f"  {part['points']:>8.2f}  {part['rule']}")
    click.echo(f"channels   {', '.join(row['channels']) or '-'}")
    interests = ", ".join(f"{i['topic']} {i['weight']:.0%}" for i in row["interests"] or [])
    click.echo(f"interests  {interests or '-'}")
    click.echo(
        f"touchpoints {row['touchpoints_total']} (7d {row['touchpoints_7d']}, "
        f"30d {row['touchpoints_30d']}, 90d {row['touchpoints_90d']}); "
        f"last {when(row['last_seen'])} via {row['last_channel'] or '-'}"
    )
    url = f" <{row['next_content_url']}>" if row["next_content_url"] else ""
    click.echo(f"next       {row['next_content_title'] or '-'}{url}")
    moves = [
        f"{s['stage']} {when(s['at'])} by {s['source']}" + (f" ({s['by']})" if s.get("by") else "")
        for s in stages
    ]
    click.echo(f"stages     {' → '.join(moves) if moves else 'lead (nothing recorded)'}")
    for point in timeline.iter_rows(named=True):
        what = point["url"] or ",".join(point["topics"] or []) or ""
        click.echo(
            f"  {when(point['timestamp'])}  {point['channel']:<7} {point['event']:<22} {what}"
        )


@click.command("funnel")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def funnel(obj: Context, as_json: bool) -> None:
    """Show persons per stage and tier, conversion and days in stage (latest build)."""
    data = snapshots.latest_funnel(obj.config)
    if data is None:
        fail("no matrix yet: run `dmp matrix build` first")
    assert data is not None
    if as_json:
        print_json(data)
        return
    total = max(1, data["persons"])
    as_of = datetime.fromtimestamp(data["as_of"] / 1000, UTC).isoformat(timespec="minutes")
    click.echo(f"{data['persons']:,} persons as of {as_of}\n")
    click.echo(f"{'stage':<10}{'persons':>10}  {'median days':>11}")
    for row in data["stages"]:
        days = "-" if row["median_days"] is None else f"{row['median_days']:g}"
        click.echo(
            f"{row['stage']:<10}{row['persons']:>10,}  {days:>11}  {bar(row['persons'], total)}"
        )
    click.echo("\nconversion")
    for step in data["conversion"]:
        rate = "-" if step["rate"] is None else f"{step['rate']:.1%}"
        click.echo(
            f"  {step['from']:>4} → {step['to']:<4} {rate:>7}  "
            f"({step['reached_to']:,} of {step['reached_from']:,})"
        )
    click.echo("\ninvolvement pyramid")
    for row in data["tiers"]:
        click.echo(f"{row['tier']:<10}{row['persons']:>10,}  {bar(row['persons'], total)}")
