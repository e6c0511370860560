"""`dmp destinations` and `dmp export`: where segments go, and sending them there."""

from __future__ import annotations

import shutil
import sys
import time
from collections import Counter
from typing import Any

import click

from dmp.cli.context import Context, fail, pass_ctx, print_json
from dmp.storage import exportfiles, locks
from exporters import export, reports, settings
from exporters.destination import ExportError
from exporters.registry import KINDS
from exporters.reports import Status


@click.group("destinations")
def destinations_group() -> None:
    """Manage the ad and newsletter tools segments are pushed to."""


@destinations_group.command("add")
@click.argument("kind", type=click.Choice(sorted(KINDS)))
@click.option("--name", required=True, help="A name for it: lowercase letters, digits, - and _.")
@click.option("--segments", required=True, help="Segment ids, comma-separated.")
@click.option("--every", default="15m", show_default=True, help="How often it syncs (1m to 30d).")
@click.option(
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A setting of the kind (repeatable), e.g. audience.SEGMENT=ID or token_env=VARIABLE "
    "(secrets only through environment variables).",
)
@click.option("--replace", is_flag=True, help="Replace a destination of that name.")
@pass_ctx
def destinations_add(
    obj: Context,
    kind: str,
    name: str,
    segments: str,
    every: str,
    options: tuple[str, ...],
    replace: bool,
) -> None:
    """Add a destination of KIND (its settings are checked; `dmp destinations test NAME`
    then proves its credentials)."""
    try:
        found = settings.validate(
            obj.redis,
            name,
            kind,
            [s.strip() for s in segments.split(",") if s.strip()],
            settings.parse_every(every),
            settings.parse_options(options),
        )
    except settings.Invalid as exc:
        fail(str(exc))
    if not settings.save(obj.redis, found, replace=replace):
        fail(f"a destination {name!r} exists (--replace to replace it)")
    click.echo(
        f"destination {name} ({kind}) for {', '.join(found.segments)}, every "
        f"{found.every_seconds // 60} min"
    )


@destinations_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def destinations_list(obj: Context, as_json: bool) -> None:
    """List the destinations with their last sync."""
    rows = []
    for name in settings.names(obj.redis):
        found = settings.load(obj.redis, name)
        if found is not None:
            last = (reports.recent(obj.redis, name, 1) or [None])[0]
            rows.append({**settings.shown(found), "last_sync": last})
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("no destinations (dmp destinations add KIND --name N --segments S …)")
    for row in rows:
        last = row["last_sync"]
        when = (
            "never synced"
            if last is None
            else f"last sync {_ago(last['started'])}: {last['status']}"
        )
        click.echo(f"{row['name']:<20} {row['kind']:<12} {','.join(row['segments']):<30} {when}")


@destinations_group.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def destinations_show(obj: Context, name: str, as_json: bool) -> None:
    """Show a destination's settings and its recent syncs."""
    found = _load(obj, name)
    data = {**settings.shown(found), "runs": reports.recent(obj.redis, name, 10)}
    if as_json:
        print_json(data)
        return
    click.echo(f"{found.name} ({found.kind}), every {found.every_seconds // 60} min")
    click.echo(f"  segments: {', '.join(found.segments)}")
    for option, value in sorted(found.options.items()):
        click.echo(f"  {option} = {value}")
    for run in data["runs"]:
        _echo_run(run)


@destinations_group.command("remove")
@click.argument("name")
@pass_ctx
def destinations_remove(obj: Context, name: str) -> None:
    """Remove a destination and what dmp kept of its syncs (the platform keeps its
    audience: empty it there, or sync an empty segment first)."""
    if not settings.remove(obj.redis, name):
        fail(f"no destination {name!r}")
    shutil.rmtree(exportfiles.exports_dir(obj.config) / name, ignore_errors=True)
    click.echo(f"removed destination {name}")


@destinations_group.command("test")
@click.argument("name")
@pass_ctx
def destinations_test(obj: Context, name: str) -> None:
    """Make a cheap authenticated call that proves the credentials and targets work."""
    found = _load(obj, name)
    try:
        said = export.prove_credentials(found)
    except (ExportError, OSError) as exc:
        raise click.ClickException(f"{name}: {exc}") from None
    click.echo(f"{name}: {said}")


@click.group("export")
def export_group() -> None:
    """Send segments to their destinations, and see how that went."""


@export_group.command("run")
@click.argument("name", required=False)
@click.option(
    "--full", is_flag=True, help="Send every row again (a replace where the platform has one)."
)
@click.option(
    "--dry-run", is_flag=True, help="Count and show a sample of what would be sent; send nothing."
)
@pass_ctx
def export_run(obj: Context, name: str | None, full: bool, dry_run: bool) -> None:
    """Sync NAME (or every destination) now."""
    chosen = [name] if name else settings.names(obj.redis)
    if name and settings.load(obj.redis, name) is None:
        fail(f"no destination {name!r}")
    if not chosen:
        click.echo("no destinations (dmp destinations add KIND --name N --segments S …)")
    worst = Status.OK
    for each in chosen:
        bar = _Bar(each)
        try:
            report = export.run(
                obj.redis, obj.config, each, full=full, dry_run=dry_run, progress=bar.update
            )
        except locks.Busy as exc:
            raise click.ClickException(str(exc)) from None
        finally:
            bar.close()
        for part in report.segments:
            click.echo(reports.describe(each, part, dry_run))
            for op, rows in part.sample.items():
                for row in rows:
                    click.echo(f"  {op}: {' | '.join(row)}")
        if report.status in (Status.FAILED, Status.INTERRUPTED):
            worst = report.status
    if worst != Status.OK:
        raise click.ClickException("a sync did not finish; the next sync resumes it")


@export_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--limit",
    default=5,
    show_default=True,
    type=click.IntRange(1, 200),
    help="Syncs per destination.",
)
@pass_ctx
def export_status(obj: Context, as_json: bool, limit: int) -> None:
    """Show each destination's recent syncs: added, removed, skipped, failed."""
    data = {name: reports.recent(obj.redis, name, limit) for name in settings.names(obj.redis)}
    if as_json:
        print_json(data)
        return
    if not data:
        click.echo("no destinations")
    for name, runs in data.items():
        click.echo(f"{name}:" if runs else f"{name}: never synced")
        for run in runs:
            _echo_run(run)


class _Bar:
    """A progress bar per segment's plan, made when the plan's size is known."""

    def __init__(self, name: str) -> None:
        self.name, self.bar, self.total = name, None, -1

    def update(self, rows: int, total: int) -> None:
        if total != self.total or self.bar is None:
            self.close()
            self.total = total
            label = f"{self.name}: sending {total} rows"
            self.bar = click.progressbar(length=max(total, 1), label=label, file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(rows)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _echo_run(run: dict[str, Any]) -> None:
    click.echo(
        f"  {_ago(run['started'])}: {run['status']}{' (full)' if run['full'] else ''} "
        f"in {run['seconds']:.1f} s, {run['retried']} retries"
    )
    for part in run["segments"]:
        part = reports.SegmentReport(**{**part, "skipped": Counter(part["skipped"])})
        click.echo(f"    {reports.describe(run['destination'], part)}")


def _ago(ms: int) -> str:
    seconds = max(0, int(time.time() - ms / 1000))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _load(obj: Context, name: str) -> settings.Settings:
    found = settings.load(obj.redis, name)
    if found is None:
        fail(f"no destination {name!r}")
    assert found is not None
    return found
