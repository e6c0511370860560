"""`dmp synth`: a realistic demo dataset sent through the real collect and import paths."""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import click

from dmp import synth
from dmp.access import sites
from dmp.cli.context import Context, print_json
from dmp.cli.sources import import_crm, import_newsletter
from dmp.ingest import stream, worker
from dmp.storage import keyspace

CHUNK = 2000


@click.command("synth")
@click.option("--persons", default=1000, show_default=True, type=click.IntRange(1, 10_000_000))
@click.option("--days", default=90, show_default=True, type=click.IntRange(1, 3650))
@click.option("--seed", default=1, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print what was made as JSON.")
@click.pass_context
def synth_cmd(ctx: click.Context, persons: int, days: int, seed: int, as_json: bool) -> None:
    """Make a demo company's site traffic, CRM and newsletter data, and ingest it.

    Site hits go through the ingest stream and the worker, CRM and newsletter rows through
    `dmp import`, as real data would. The same seed makes the same data (up to the end
    time, which is now). Then `dmp matrix build` and `dmp funnel` show the result.
    """
    obj: Context = ctx.obj
    r = obj.redis
    until = int(time.time() * 1000) // 1000 * 1000
    data = synth.generate(persons, days, seed, until)
    if not r.exists(keyspace.site(synth.SITE)):
        sites.add_site(r, "Acme Software", [synth.HOST.split("//")[1]])
    if not r.exists(keyspace.CONTENT_CATALOG):
        r.set(keyspace.CONTENT_CATALOG, data.catalog)
    n = obj.config.stream_partitions
    stream.ensure_group(r, n)
    with click.progressbar(data.hits, label="site hits", file=sys.stderr) as hits:
        chunk = []
        for hit in hits:
            chunk.append(hit)
            if len(chunk) == CHUNK:
                stream.enqueue(r, chunk, {}, atomic=False, partitions=n)
                chunk = []
        stream.enqueue(r, chunk, {}, atomic=False, partitions=n)
    pending = stream.pending_count(r)
    with click.progressbar(length=pending, label="ingesting", file=sys.stderr) as bar:
        worker.Worker(r, obj.config).run(once=True, progress=bar.update)
    folder = obj.config.data_dir / "synth"
    crm_file = _write_csv(folder / f"crm-{seed}.csv", data.crm_rows)
    newsletter_file = _write_csv(folder / f"newsletter-{seed}.csv", data.newsletter_rows)
    for command, path in ((import_crm, crm_file), (import_newsletter, newsletter_file)):
        if path is not None:
            ctx.invoke(
                command, file=path, pairs=(), mapping_file=None, no_wait=False, as_json=False
            )
    summary = {
        "persons": persons,
        "days": days,
        "seed": seed,
        "site_hits": len(data.hits),
        "crm_rows": len(data.crm_rows),
        "newsletter_rows": len(data.newsletter_rows),
        "files": [str(p) for p in (crm_file, newsletter_file) if p is not None],
    }
    if as_json:
        print_json(summary)
        return
    click.echo(
        f"made {persons:,} people over {days} days (seed {seed}): {len(data.hits):,} site hits, "
        f"{len(data.crm_rows):,} CRM records, {len(data.newsletter_rows):,} newsletter events; "
        "next: dmp matrix build && dmp funnel"
    )


def _write_csv(path: Path, rows: list[dict]) -> Path | None:
    if not rows:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path
