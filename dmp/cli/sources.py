"""Import commands: CRM records and newsletter events from CSV or Parquet files."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from collectors import crm, newsletter
from collectors.imports import (
    Fields,
    ImportFileError,
    ImportReport,
    enqueue_new,
    map_columns,
    parse_mapping,
    read_table,
    to_hits,
)
from dmp.cli.context import Context, fail, pass_ctx, print_json
from dmp.ingest import stream, worker
from dmp.people import lifecycle
from dmp.records import Hit, Source, Stage
from segments.rules import RuleError
from segments.yamltext import load_yaml

SHOWN_BAD_ROWS = 20


@click.group("import")
def import_group() -> None:
    """Bring in data from other systems (CSV with , or ; separators, or Parquet)."""


_FILE = click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
_MAP = click.option(
    "--map",
    "pairs",
    multiple=True,
    metavar="FIELD=COLUMN",
    help="Which column holds a field, where its name does not say so (repeatable).",
)
_MAPPING = click.option(
    "--mapping",
    "mapping_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A YAML or JSON file of FIELD: COLUMN pairs (--map entries win over it).",
)
_NO_WAIT = click.option(
    "--no-wait", is_flag=True, help="Only queue the rows; the running worker ingests them."
)
_JSON = click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
_INCLUDE_ERASED = click.option(
    "--include-erased",
    is_flag=True,
    help="Take rows of persons erased before too (they asked to come back); else skipped.",
)


@import_group.command("crm")
@_FILE
@_MAP
@_MAPPING
@_NO_WAIT
@_INCLUDE_ERASED
@_JSON
@pass_ctx
def import_crm(
    obj: Context,
    file: Path,
    pairs: tuple[str, ...],
    mapping_file: Path | None,
    no_wait: bool,
    include_erased: bool,
    as_json: bool,
) -> None:
    """Import CRM records: email, phone, crm_id, company, job_title, employees, industry,
    country, street, postal_code, city, stage, deal_value, updated_at."""
    mapping = _mapping(mapping_file, pairs)
    report, fresh = _import(
        obj, file, mapping, Source.CRM, crm.FIELDS, crm.crm_hit, no_wait, include_erased
    )
    stages = [
        (crm.person_identifier(hit), Stage(hit.traits["stage"]), hit.timestamp)
        for _, hit in fresh
        if "stage" in hit.traits
    ]
    recorded = 0
    if stages and not no_wait:
        recorded = lifecycle.record_imported_stages(obj.redis, stages, Source.CRM.value)
    _report(file, report, as_json, {"stages_recorded": recorded}, no_wait)


@import_group.command("newsletter")
@_FILE
@_MAP
@_MAPPING
@_NO_WAIT
@_INCLUDE_ERASED
@_JSON
@pass_ctx
def import_newsletter(
    obj: Context,
    file: Path,
    pairs: tuple[str, ...],
    mapping_file: Path | None,
    no_wait: bool,
    include_erased: bool,
    as_json: bool,
) -> None:
    """Import newsletter events: email, event (sent, open, click, unsubscribe, bounce),
    time, campaign, topic, url."""
    fields, make = newsletter.FIELDS, newsletter.newsletter_hit
    mapping = _mapping(mapping_file, pairs)
    report, _ = _import(
        obj, file, mapping, Source.NEWSLETTER, fields, make, no_wait, include_erased
    )
    _report(file, report, as_json, {}, no_wait)


def _mapping(mapping_file: Path | None, pairs: tuple[str, ...]) -> dict[str, str]:
    """Return the column mapping of a mapping file and --map pairs (which win)."""
    mapping: dict[str, str] = {}
    if mapping_file is not None:
        try:
            data = load_yaml(mapping_file.read_text(encoding="utf-8"), str(mapping_file))
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"--mapping {mapping_file}: cannot read it ({' '.join(str(exc).split())[:120]})")
        except RuleError as exc:
            fail(f"--mapping {mapping_file}: cannot read it ({exc.problem})")
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            fail(f"--mapping {mapping_file}: expected FIELD: COLUMN pairs")
        mapping.update(data)
    try:
        mapping.update(parse_mapping(pairs))
    except ImportFileError as exc:
        fail(str(exc))
    return mapping


def _import(
    obj: Context,
    file: Path,
    mapping: dict[str, str],
    source: Source,
    fields: Fields,
    make_hit: Callable[[dict[str, Any], str], Hit],
    no_wait: bool,
    include_erased: bool = False,
) -> tuple[ImportReport, list[tuple[str, Hit]]]:
    try:
        frame = map_columns(read_table(file), fields, mapping)
    except ImportFileError as exc:
        fail(str(exc))
        raise AssertionError from exc  # unreachable: _fail raises
    report = ImportReport()
    hits = to_hits(source.value, frame, make_hit, report)
    if report.rows and not hits:
        fail(
            f"{file}: none of its {report.rows} rows can be imported ({report.bad[0].row}: "
            f"{report.bad[0].reason})"
        )
    r = obj.redis
    stream.ensure_group(r)
    with click.progressbar(length=len(hits), label="queueing rows", file=sys.stderr) as bar:
        fresh = enqueue_new(
            r,
            source.value,
            hits,
            report,
            bar.update,
            include_erased,
            partitions=obj.config.stream_partitions,
        )
    if fresh and not no_wait:
        with click.progressbar(
            length=stream.pending_count(r), label="ingesting", file=sys.stderr
        ) as bar:
            worker.Worker(r, obj.config).run(once=True, progress=bar.update)
    return report, fresh


def _report(file: Path, report: ImportReport, as_json: bool, extra: dict, no_wait: bool) -> None:
    if as_json:
        print_json(
            {
                "file": str(file),
                "rows": report.rows,
                "imported": report.new,
                "already_imported": report.already,
                "erased_before": report.erased,
                "bad": [{"row": b.row, "reason": b.reason} for b in report.bad],
                "ingested": not no_wait,
                **extra,
            }
        )
        return
    for bad in report.bad[:SHOWN_BAD_ROWS]:
        click.echo(f"{file}: row {bad.row}: {bad.reason}", err=True)
    if len(report.bad) > SHOWN_BAD_ROWS:
        click.echo(f"{file}: … and {len(report.bad) - SHOWN_BAD_ROWS} more bad rows", err=True)
    state = "queued for the worker" if no_wait else "ingested"
    stages = f", {extra['stages_recorded']} stages recorded" if extra.get("stages_recorded") else ""
    erased = (
        f", {report.erased:,} of persons erased before skipped (--include-erased takes them)"
        if report.erased
        else ""
    )
    click.echo(
        f"{report.rows:,} rows: {report.new:,} {state}, {report.already:,} already imported, "
        f"{len(report.bad):,} bad{stages}{erased}"
    )
