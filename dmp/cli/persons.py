"""`dmp persons`: what dmp holds about one person."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dmp.cli.context import Context, fail, pass_ctx
from dmp.people.identity import Identifier, IdKind, normalise_email
from dmp.people.profiles import find_person
from dmp.privacy.export import export_person


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
