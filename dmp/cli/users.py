"""`dmp users`: who may log in to the marketer UI, with which role."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import click

from dmp.access import users
from dmp.cli.context import Context, fail, pass_ctx, print_json


@click.group("users")
def users_group() -> None:
    """Manage the marketer UI's users (admin, marketer, viewer)."""


@users_group.command("add")
@click.argument("email")
@click.option(
    "--role",
    type=click.Choice([r.value for r in users.Role]),
    default=users.Role.MARKETER.value,
    show_default=True,
    help="admin: everything; marketer: segments, scoring, destinations; viewer: reads only.",
)
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from standard input (scripts)."
)
@click.option("--replace", is_flag=True, help="Set a new password (and role) for a user.")
@pass_ctx
def users_add(obj: Context, email: str, role: str, password_stdin: bool, replace: bool) -> None:
    """Add a user of the UI; the password is asked for twice (or read from stdin)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    try:
        user = users.add_user(obj.redis, email, password, users.Role(role), replace=replace)
    except users.UserError as exc:
        fail(str(exc))
    click.echo(f"user {user.email} ({user.role.value}) added")


@users_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def users_list(obj: Context, as_json: bool) -> None:
    """List the users with their roles (and any lock after failed logins)."""
    found = users.list_users(obj.redis)
    if as_json:
        print_json(
            [
                {"email": u.email, "role": u.role.value, "created": u.created}
                | ({"locked_until": u.locked_until} if u.locked_until else {})
                for u in found
            ]
        )
        return
    if not found:
        click.echo("no users (dmp users add EMAIL --role admin)")
    for u in found:
        since = datetime.fromtimestamp(u.created / 1000, UTC).strftime("%Y-%m-%d")
        click.echo(f"{u.email:<40} {u.role.value:<9} since {since}")


@users_group.command("remove")
@click.argument("email")
@pass_ctx
def users_remove(obj: Context, email: str) -> None:
    """Remove a user."""
    if not users.remove_user(obj.redis, email):
        fail(f"no user {email[:80]!r}")
    click.echo(f"removed user {email}")
