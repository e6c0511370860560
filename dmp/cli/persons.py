"""`dmp persons`: what dmp holds about one person."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from dmp.cli.context import Context, fail, pass_ctx, print_json
from dmp.people.identity import Identifier, IdKind, normalise_email
from dmp.people.profiles import find_person
from dmp.privacy import requests
from dmp.privacy.export import export_person
from dmp.records import PERSON_ID_PATTERN


@click.group("persons")
def persons_group() -> None:
    """One person: what dmp holds about them."""


@persons_group.command("export")
@click.argument("person_id", required=False)
@click.option("--email", help="Find the person by email address instead.")
@click.option("--uid", help="Find the person by dmp_uid cookie instead.")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE."
)
@pass_ctx
def persons_export(
    obj: Context, person_id: str | None, email: str | None, uid: str | None, output: Path | None
) -> None:
    """Print everything dmp holds about a person as one JSON document (GDPR Art. 15):
    identifiers, traits, consents with proof, stages, score, segments and the whole
    timeline from the event log. Give PERSON_ID, --email or --uid."""
    if sum(x is not None for x in (person_id, email, uid)) != 1:
        fail("give exactly one of PERSON_ID, --email or --uid")
    pid = person_id or _find(obj, email, uid)
    found = export_person(obj.redis, obj.config, pid)
    if found is None:
        fail(f"no person {pid}")
    text = json.dumps(found, indent=2, ensure_ascii=False, default=str)
    if output is None:
        click.echo(text)
        return
    output.write_text(text + "\n", encoding="utf-8")
    click.echo(f"wrote {output} ({len(found['timeline'])} events)", err=True)


def _find(obj: Context, email: str | None, uid: str | None) -> str:
    if email is not None:
        normal = normalise_email(email)
        if not normal:
            fail(f"not an email address: {email}")
        ident = Identifier(IdKind.EMAIL, normal)
    else:
        ident = Identifier(IdKind.UID, uid or "")
    pid = find_person(obj.redis, ident)
    if pid is None:
        fail(f"no person with {ident.kind.value} {ident.value}")
    return pid


@persons_group.command("unmerge")
@click.argument("person_id")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_ctx
def persons_unmerge(obj: Context, person_id: str, as_json: bool) -> None:
    """Undo a merge: PERSON_ID, an id merged into another person (`dmp persons export`
    lists them under merged_from), gets back the identifiers, consents, traits, stages
    and timeline it brought; both persons' tiers follow from what each holds then."""
    if not _PID.fullmatch(person_id):
        fail(f"not a person id (16 hex digits): {person_id}")
    request_id = requests.request_unmerge(obj.redis, person_id, by="cli")
    report = requests.run(obj.redis, obj.config, request_id)
    if report is None:
        fail("the ingest worker did not apply the unmerge within 60 s; it stays queued")
    if not report["found"]:
        fail(report["error"])
    if as_json:
        print_json(report)
        return
    click.echo(f"person {report['person_id']} is separate from {report['from']} again")
    click.echo(f"  identifiers back: {', '.join(report['identifiers']) or 'none'}")
    click.echo(f"  traits back: {', '.join(report['traits']) or 'none'}")
    click.echo(f"  touchpoints back: {report['touchpoints']}")
    tiers = ", ".join(f"{p} {t}" for p, t in report["tiers"].items())
    click.echo(f"  tiers now: {tiers}")


@click.command("forget")
@click.option("--person", "person_id", help="The person's id.")
@click.option("--email", help="Find the person by email address.")
@click.option("--uid", help="Find the person by dmp_uid cookie.")
@click.option("--reason", default="", help="Why (kept in the erasure log), e.g. a ticket id.")
@click.option("--by", default="", help="Who asked for it (kept in the erasure log).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_ctx
def forget_cmd(
    obj: Context,
    person_id: str | None,
    email: str | None,
    uid: str | None,
    reason: str,
    by: str,
    as_json: bool,
) -> None:
    """Erase a person (GDPR Art. 17): gone from Redis and every answer dmp gives at once
    (profile, identifiers, timeline, segments, lookups), from every Parquet file at the
    next compaction (`dmp compact`). Later hits with their cookie count only in
    aggregate, and imports skip their email.

    Give exactly one of --person, --email or --uid."""
    if sum(x is not None for x in (person_id, email, uid)) != 1:
        fail("give exactly one of --person, --email or --uid")
    if person_id is not None and not _PID.fullmatch(person_id):
        fail(f"not a person id (16 hex digits): {person_id}")
    pid = person_id or _find(obj, email, uid)
    request_id = requests.request_erasure(obj.redis, pid, by=by, reason=reason)
    report = requests.run(obj.redis, obj.config, request_id)
    if report is None:
        fail("the ingest worker did not apply the erasure within 60 s; it stays queued")
    if not report["found"]:
        fail(f"no person {pid}")
    if as_json:
        print_json(report)
        return
    idents = ", ".join(f"{n} {k}" for k, n in report["identifiers"].items()) or "none"
    click.echo(f"erased person {report['person_id']}")
    click.echo(f"  redis:    {report['redis_keys_deleted']} keys; identifiers: {idents}")
    click.echo(f"  merged:   {report['merged_ids']} earlier ids of theirs")
    click.echo(f"  segments: {', '.join(report['segments']) or 'none'} (lookups answer nothing)")
    click.echo("  files:    their rows leave every Parquet file at the next `dmp compact`")
    click.echo("  log:      recorded with salted hashes only (no destination holds them yet)")


_PID = re.compile(PERSON_ID_PATTERN)
