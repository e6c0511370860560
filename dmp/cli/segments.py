"""Segment commands: apply definitions (versioned), list them, show one's versions."""

from __future__ import annotations

import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import click

from dmp.cli.context import Context, bar, error_line, fail, pass_ctx, print_json
from dmp.membership import audience, definitions, results
from dmp.records import Category
from dmp.storage import locks
from segments.definition import SegmentDefinition, load_definitions
from segments.rules import RuleError, RuleErrors


@click.group("segments")
def segments_group() -> None:
    """Audiences defined over the touchpoint matrix."""


@segments_group.command("apply")
@click.argument("path", type=click.Path(exists=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print what was stored as JSON.")
@pass_ctx
def segments_apply(obj: Context, path: Path, as_json: bool) -> None:
    """Check segment definitions (a YAML/JSON file, or every one in a folder) and store
    them; a changed definition becomes a new version. Nothing is stored if any is bad."""
    found = _read_definitions(path)
    stored = definitions.apply_definitions(obj.redis, found)
    if as_json:
        print_json([{"id": i, "version": v, "changed": c} for i, v, c in stored])
        return
    for sid, version, changed in stored:
        click.echo(f"{sid:<32} v{version}  {'stored' if changed else 'unchanged'}")


@segments_group.command("plan")
@click.argument("path", type=click.Path(exists=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def segments_plan(obj: Context, path: Path, as_json: bool) -> None:
    """Show who applying the definitions would add and remove (on the latest matrix)."""
    from dmp.membership.plan import plan

    found = _read_definitions(path)
    try:
        result = plan(obj.redis, obj.config, found)
    except LookupError as exc:
        fail(str(exc))
    if as_json:
        print_json(result)
        return
    for seg in result["segments"]:
        now = "new" if seg["version_now"] is None else f"v{seg['version_now']}"
        click.echo(
            f"{seg['id']} ({now}{'' if seg['changed'] else ', unchanged'}): "
            f"{seg['members_now']:,} → {seg['members_after']:,} members, "
            f"+{seg['added']:,} −{seg['removed']:,}"
        )
        for sign, key in (("+", "sample_added"), ("−", "sample_removed")):
            for p in seg[key]:
                click.echo(
                    f"  {sign} {p['person_id']}  {p['email'] or '-':<36} "
                    f"score {p['score']:g}  {p['stage']}"
                )


@segments_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def segments_list(obj: Context, as_json: bool) -> None:
    """List the segments with their current version."""
    stored = definitions.list_segments(obj.redis)
    if as_json:
        print_json(
            [
                {
                    "id": s.definition.id,
                    "name": s.definition.name,
                    "version": s.version,
                    "updated": s.updated,
                    "definition": s.definition.source,
                }
                for s in stored
            ]
        )
        return
    for s in stored:
        when = datetime.fromtimestamp(s.updated / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        click.echo(f"{s.definition.id:<32} v{s.version:<4} {when}  {s.definition.name}")


@segments_group.command("versions")
@click.argument("segment_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def segments_versions(obj: Context, segment_id: str, as_json: bool) -> None:
    """Show every version of a segment's definition."""
    found = definitions.versions(obj.redis, segment_id)
    if not found:
        fail(f"no segment {segment_id}")
    if as_json:
        print_json(found)
        return
    for v in found:
        when = datetime.fromtimestamp(v["at"] / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        what = "(deleted)" if v.get("deleted") else v["definition"].get("name", "")
        click.echo(f"v{v['version']:<4} {when}  {what}")


@segments_group.command("delete")
@click.argument("segment_id")
@pass_ctx
def segments_delete(obj: Context, segment_id: str) -> None:
    """Delete a segment: the next run empties it (everyone leaves); its versions stay."""
    version = definitions.delete_segment(obj.redis, segment_id)
    if version is None:
        fail(f"no segment {segment_id!r}")
    click.echo(f"{segment_id} deleted (v{version}); the next run empties it")


@segments_group.command("run")
@click.option("--full", is_flag=True, help="Rebuild the matrix and recount every person.")
@click.option("--no-build", is_flag=True, help="Evaluate the latest matrix as it is.")
@click.option("--json", "as_json", is_flag=True, help="Print the run record as JSON.")
@pass_ctx
def segments_run(obj: Context, full: bool, no_build: bool, as_json: bool) -> None:
    """Build the matrix (incrementally), evaluate every segment in one pass, write the
    membership snapshot and the changes, and move the lookup sets."""
    from dataclasses import asdict

    from dmp.membership import runs

    try:
        if no_build or as_json:
            result = runs.run(
                obj.redis, obj.config, full=full, build_matrix=not no_build, wait_seconds=60
            )
        else:
            keys = max(1, obj.redis.dbsize())  # an upper bound of the persons, as matrix build
            with click.progressbar(length=keys, label="reading persons", file=sys.stderr) as bar:
                result = runs.run(
                    obj.redis, obj.config, full=full, wait_seconds=60, progress=bar.update
                )
    except LookupError as exc:
        fail(str(exc))
    except locks.Busy as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        print_json(asdict(result))
        return
    how = f"{result.recounted:,} persons recounted" if result.incremental else "all counted"
    click.echo(f"run {result.run_id} over {result.matrix} ({how}, {result.seconds:.2f} s)")
    for sid, size in sorted(result.members.items()):
        failed = "  FAILED (members of the last run kept)" if sid in result.failed else ""
        click.echo(f"  {sid:<32} v{result.versions[sid]:<4} {size:>10,} members{failed}")
    click.echo(f"{result.entered:,} entered, {result.left:,} left")
    _print_failed(result.failed)


def _print_failed(failed: dict[str, str]) -> None:
    """Print each failed segment of a run and its error, one line each."""
    for sid, error in sorted(failed.items()):
        click.echo(f"  failed {sid}: {error}")


@segments_group.command("members")
@click.argument("segment_id")
@click.option("--limit", type=click.IntRange(1), default=None, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def segments_members(obj: Context, segment_id: str, limit: int | None, as_json: bool) -> None:
    """List a segment's members as of the last run, highest score first, and whether each
    may be reached now for ads (an identifier with ads consent) and by email (an address
    with email consent, not unsubscribed or bounced)."""
    found = results.member_rows(obj.config, segment_id, limit)
    if found is None:
        fail(f"no segment {segment_id!r} in the last run (apply it, then `dmp segments run`)")
    reach = _reachable(obj, found["person_id"].to_list())
    if as_json:
        print_json([{**m, "reachable": reach[m["person_id"]]} for m in found.to_dicts()])
        return
    click.echo(f"{'PERSON':<16}  {'EMAIL':<36} {'TIER':<7} {'STAGE':<9} {'SCORE':>7}  ADS EMAIL")
    for m in found.iter_rows(named=True):
        score = "-" if m["score"] is None else f"{m['score']:g}"
        can = reach[m["person_id"]]
        click.echo(
            f"{m['person_id']:<16}  {m['email'] or '-':<36} {m['tier'] or '-':<7} "
            f"{m['stage'] or '-':<9} {score:>7}  {_yes(can['ads']):<3} {_yes(can['email'])}"
        )


def _reachable(obj: Context, pids: list[str]) -> dict[str, dict[str, bool]]:
    """Return, per person, whether the ads and the email channel may reach them now."""
    chunks = [pids[i : i + audience.CHUNK] for i in range(0, len(pids), audience.CHUNK)]
    reached: dict[str, set[str]] = {}
    for channel in (Category.ADS, Category.EMAIL):
        found = audience.stream_contacts(obj.redis, chunks, channel, Counter())
        reached[channel.value] = {c.person_id for _, part in found for c in part}
    return {p: {name: p in ids for name, ids in reached.items()} for p in pids}


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _read_definitions(path: Path) -> list[SegmentDefinition]:
    """Return the definitions of a file or of every .yaml/.yml/.json file in a folder."""
    files = (
        sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
        if (path.is_dir())
        else [path]
    )
    if not files:
        fail(f"{path}: no .yaml, .yml or .json files in it")
    found: list[SegmentDefinition] = []
    problems: list[RuleError] = []
    for file in files:
        try:
            found += load_definitions(file.read_text(encoding="utf-8"), str(file))
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read {file}: {exc}")
        except RuleErrors as exc:
            problems += exc.errors
        except RuleError as exc:
            problems.append(exc)
    if problems:
        _fail_all(problems)
    ids = [d.id for d in found]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        fail(f"{path}: segment {twice[0]!r} is defined in more than one file")
    return found


def _fail_all(problems: list[RuleError]) -> None:
    """Print every problem on a line of its own (each names its file), then exit 2."""
    if len(problems) == 1:
        fail(str(problems[0]))
    for problem in problems:
        click.echo(f"dmp: {error_line(str(problem))}", err=True)
    fail(f"{len(problems)} segment definitions cannot be used (above); nothing was stored")


@segments_group.command("preview")
@click.argument("target")
@click.option(
    "--sample",
    type=click.IntRange(0, 1000),
    default=10,
    show_default=True,
    help="Members to show, highest score first.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def segments_preview(obj: Context, target: str, sample: int, as_json: bool) -> None:
    """Preview a segment (a stored ID, or a FILE not yet applied) on the latest matrix:
    size, breakdown by tier, stage and channel, and members with the conditions met."""
    from dmp.membership.preview import preview

    path = Path(target)
    if path.exists():
        found = _read_definitions(path)
    else:
        stored = definitions.get_segment(obj.redis, target)
        if stored is None:
            fail(f"no segment {target!r} and no file {target}")
        found = [stored.definition]
    try:
        results = [preview(obj.redis, obj.config, d, sample) for d in found]
    except LookupError as exc:
        fail(str(exc))
    if as_json:
        print_json(results if path.exists() else results[0])
        return
    for res in results:
        _print_preview(res)


def _print_preview(res: dict) -> None:
    click.echo(
        f"{res['id']} — {res['name']}: {res['members']:,} of {res['persons']:,} persons "
        f"({res['share']:.1%}) as of {_iso(res['as_of'])}"
    )
    for title, key in (("tier", "by_tier"), ("stage", "by_stage"), ("channel", "by_channel")):
        click.echo(f"  by {title}:")
        for name, n in res[key].items():
            click.echo(f"    {name:<12} {bar(n, res['members'], 30):<30} {n:>9,}")
    click.echo("  conditions (members meeting each):")
    for c in res["conditions"]:
        click.echo(f"    {c['path']:<24} {_compact(c['condition']):<48} {c['members_meeting']:>9,}")
    if res["sample"]:
        click.echo("  sample:")
    for m in res["sample"]:
        met = ", ".join(c["path"].removeprefix("where") or "where" for c in m["met"])
        click.echo(
            f"    {m['person_id']}  {m['email'] or '-':<32} score {m['score']:<6g} "
            f"{m['tier']:<7} {m['stage'] or '-':<9} met: {met}"
        )


def _compact(written: object) -> str:
    import json

    text = json.dumps(written, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= 48 else text[:47] + "…"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


@segments_group.command("overlap")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def segments_overlap(obj: Context, as_json: bool) -> None:
    """Show how the last run's segments overlap: of each row's members, the share also in
    each column's segment."""
    from dmp.membership.preview import overlap

    try:
        res = overlap(obj.config)
    except LookupError as exc:
        fail(str(exc))
    if as_json:
        print_json(res)
        return
    ids, width = res["segments"], max([8, *(len(s) for s in res["segments"])])
    click.echo(" " * (width + 11) + " ".join(f"{i + 1:>6}" for i in range(len(ids))))
    for i, sid in enumerate(ids):
        n = res["members"][i]
        row = res["overlap"][i]
        shares = (f"{row[j] / n:>6.0%}" if n else f"{'-':>6}" for j in range(len(ids)))
        click.echo(f"{i + 1:>2} {sid:<{width}} {n:>7,} " + " ".join(shares))


@segments_group.command("runs")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def segments_runs(obj: Context, limit: int, as_json: bool) -> None:
    """List the newest segment runs: when, how (full or incremental), what moved, and
    the segments that failed in them (with their errors)."""

    found = results.run_records(obj.redis, limit)
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo("no segment run yet (dmp segments run, or a running worker, makes one)")
    for run in found:
        how = f"{run['recounted']:,} recounted" if run["incremental"] else "full"
        total = sum(run["members"].values())
        failed = run.get("failed", {})  # records before failures were recorded: none
        click.echo(
            f"{_iso(run['as_of'])}  {len(run['members']):>3} segments  "
            f"{total:>10,} memberships  +{run['entered']:,} −{run['left']:,}  "
            f"{how}, {run['seconds']:.2f} s" + (f", {len(failed)} failed" if failed else "")
        )
        _print_failed(failed)
