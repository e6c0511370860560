"""`dmp sites` and `dmp keys`: the websites that send hits and the API keys."""

from __future__ import annotations

import dataclasses
from typing import Any

import click

from collectors.snippets import snippets
from dmp.access import apikeys, pagecheck, sites
from dmp.cli.context import Context, error_line, fail, pass_ctx, print_json
from dmp.membership import definitions


@click.group("sites")
def sites_group() -> None:
    """Manage the websites that send hits."""


@sites_group.command("add")
@click.argument("name")
@click.option(
    "--domain", "domains", multiple=True, required=True, help="A domain of the site (repeatable)."
)
@click.option(
    "--keep-param",
    "keep",
    multiple=True,
    help="A query parameter its page URLs keep besides utm_* (repeatable; others are dropped).",
)
@pass_ctx
def sites_add(obj: Context, name: str, domains: tuple[str, ...], keep: tuple[str, ...]) -> None:
    """Add a site; its write key is printed on the last line (shown only once)."""
    try:
        site, key = sites.add_site(obj.redis, name, list(domains), keep)
    except sites.SiteError as exc:
        fail(str(exc))
    click.echo(
        f"site {site.site_id} for {', '.join(site.domains)}. Its servers need a server key "
        f"(dmp keys create --scope server --site {site.site_id}); the public write key"
        " for pages:"
    )
    click.echo(key)


@sites_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def sites_list(obj: Context, as_json: bool) -> None:
    """List the sites."""
    found = sites.list_sites(obj.redis)
    if as_json:
        print_json(
            [
                {
                    "site_id": s.site_id,
                    "name": s.name,
                    "domains": list(s.domains),
                    "created": s.created,
                    "keep_params": sorted(s.keep_params),
                }
                for s in found
            ]
        )
        return
    if not found:
        click.echo("no sites (dmp sites add NAME --domain D)")
        return
    click.echo(f"{'SITE':<24} {'DOMAINS':<40} {'CREATED':<25} KEEPS")
    for s in found:
        kept = ",".join(sorted(s.keep_params)) or "-"
        click.echo(f"{s.site_id:<24} {','.join(s.domains):<40} {s.created:<25} {kept}")


@sites_group.command("keep-params")
@click.argument("site_id")
@click.argument("names", nargs=-1)
@pass_ctx
def sites_keep_params(obj: Context, site_id: str, names: tuple[str, ...]) -> None:
    """Set the query parameters SITE_ID's page URLs keep besides utm_* (none: only utm_*).

    Every other parameter is dropped from URLs and referrers before a hit is stored, and
    a kept value that looks like an email or a token is redacted.
    """
    try:
        site = sites.set_keep_params(obj.redis, site_id, names)
    except sites.SiteError as exc:
        fail(str(exc))
    kept = ", ".join(["utm_*", *sorted(site.keep_params)])
    click.echo(f"site {site.site_id} keeps {kept}")


@sites_group.command("snippet")
@click.argument("site_id")
@click.option(
    "--url",
    "base_url",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="Where browsers reach dmp (https://t.example.com in production).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the snippets as JSON.")
@pass_ctx
def sites_snippet(obj: Context, site_id: str, base_url: str, as_json: bool) -> None:
    """Print the tag and the pixel for SITE_ID's pages, ready to paste.

    The tag follows the page's consent banner by itself when it is an IAB TCF v2.2 CMP or
    uses Google Consent Mode v2; any other banner calls dmp.consent([...]) with the
    categories the visitor agreed to (analytics, ads, email). The pixel's script sends the
    TCF CMP's consent string. Neither grants any consent by itself. With DMP_TCF_VENDOR_ID
    set, a pixel for ads with IAB's consent macros follows.
    """
    if not base_url.startswith(("http://", "https://")) or len(base_url) > 200:
        fail(f"--url: {base_url[:80]!r} is not an http(s) address")
    if sites.get_site(obj.redis, site_id) is None:
        fail(f"no site {site_id[:80]!r} (dmp sites list)")
    key = sites.public_write_key(obj.redis, site_id)
    if not key:
        fail(f"{site_id}: its write key was not kept (added before dmp kept them); add it anew")
    found = snippets(base_url, key, obj.config.tcf_vendor_id)
    if as_json:
        print_json([dataclasses.asdict(s) for s in found])
        return
    click.echo("\n\n".join(s.html for s in found))


@sites_group.command("check")
@click.argument("url")
@click.option("--site", "site_id", default=None, help="Check this site only (else every site).")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@pass_ctx
def sites_check(obj: Context, url: str, site_id: str | None, as_json: bool) -> None:
    """Say whether a page at URL may send hits with a site's write key, and why.

    A page may send with a site's key when its host is one of the site's domains or a
    subdomain of one (shop.acme.de for acme.de; not acme.de for shop.acme.de). Origins
    are matched by host name only: the scheme and the port do not matter, so
    http://localhost:3000 may send for a site with the domain localhost.

    Exit code 0: allowed (for --site, or for some site); 1: not allowed, with the
    command that adds the domain; 2: URL is not an http(s) page URL, or no such site.

    \b
      dmp sites check https://www.acme.de/pricing --site acme-gmbh
    """
    try:
        pagecheck.page_host(url)  # bad input is told before any store is opened
        found = pagecheck.check_page(obj.redis, url, site_id)
    except sites.SiteError as exc:
        fail(error_line(str(exc)))
    fix = _domain_fix(found)
    if as_json:
        print_json(_check_json(found, fix))
    else:
        _echo_check(found, fix)
    if not found.allowed:
        raise SystemExit(1)


def _domain_fix(found: pagecheck.PageCheck) -> str:
    """Return the command that would let the page send (empty when it may)."""
    if found.allowed:
        return ""
    if not found.verdicts:
        return f"dmp sites add NAME --domain {found.host}"
    site_id = found.verdicts[0].site_id if len(found.verdicts) == 1 else "SITE_ID"
    return f"dmp sites domains {site_id} --add {found.host}"


def _check_json(found: pagecheck.PageCheck, fix: str) -> dict[str, Any]:
    """Return a page check as `dmp sites check --json` prints it."""
    return {
        "url": found.url,
        "host": found.host,
        "matched_by": "host name only (scheme and port do not matter)",
        "allowed": found.allowed,
        "sites": [
            {
                "site_id": v.site_id,
                "allowed": v.allowed,
                "domain": v.domain or None,
                "domains": list(v.domains),
            }
            for v in found.verdicts
        ],
        "fix": fix or None,
    }


def _echo_check(found: pagecheck.PageCheck, fix: str) -> None:
    """Print a page check: the host, each site's verdict and reason, and the fix."""
    click.echo(f"page host {found.host} (matched by host name only: scheme and port do not matter)")
    if not found.verdicts:
        click.echo("not allowed: there are no sites")
    for v in found.verdicts:
        if v.allowed:
            how = "is" if v.domain == found.host else "is a subdomain of"
            click.echo(f"{v.site_id}: allowed, {found.host} {how} its domain {v.domain}")
        else:
            click.echo(
                f"{v.site_id}: not allowed, {found.host} is neither one of nor under its "
                f"domains {', '.join(v.domains)}"
            )
    if fix:
        click.echo(f"fix: add the page's domain to its site: {fix}")


@sites_group.command("domains")
@click.argument("site_id")
@click.option("--add", "add", multiple=True, help="A domain to add (repeatable).")
@click.option("--remove", "remove", multiple=True, help="A domain to remove (repeatable).")
@pass_ctx
def sites_domains(
    obj: Context, site_id: str, add: tuple[str, ...], remove: tuple[str, ...]
) -> None:
    """Add or remove domains of SITE_ID (pages on a domain or its subdomains may send with
    the site's write key); without options, print its domains. A site keeps at least one
    domain. Running collectors see the change within DMP_SITE_CACHE_SECONDS.
    """
    try:
        if add or remove:
            site = sites.change_domains(obj.redis, site_id, add, remove)
        else:
            site = sites.get_site(obj.redis, site_id)
            if site is None:
                raise sites.SiteError(f"no site {site_id[:80]!r} (dmp sites list)")
    except sites.SiteError as exc:
        fail(error_line(str(exc)))
    click.echo(f"site {site.site_id} for {', '.join(site.domains)}")


@sites_group.command("remove")
@click.argument("site_id")
@pass_ctx
def sites_remove(obj: Context, site_id: str) -> None:
    """Remove a site and its write key (its stored events stay)."""
    try:
        sites.remove_site(obj.redis, site_id)
    except sites.SiteError as exc:
        fail(str(exc))
    click.echo(f"removed site {site_id}")


@click.group("keys")
def keys_group() -> None:
    """Manage API keys."""


@keys_group.command("create")
@click.option("--scope", type=click.Choice([s.value for s in apikeys.Scope]), required=True)
@click.option("--name", default="", help="A note on whom the key is for.")
@click.option(
    "--audiences", default="", help="Partner keys: the segment ids shared, comma-separated."
)
@click.option("--site", "site_id", default="", help="Server keys: the site they write for.")
@pass_ctx
def keys_create(obj: Context, scope: str, name: str, audiences: str, site_id: str) -> None:
    """Create an API key; it is printed on the last line (shown only once).

    A partner key (an ad tool) sees only the audiences given, for example:

    \b
      dmp keys create --scope partner --audiences hot-leads,dach --name "DSP X"

    A server key is a site's secret key for its own servers (Segment's server SDKs):
    what they send is trusted, where the site's public write key (in every page) only
    makes claims that cannot grant consent for, or change, what trusted sources said:

    \b
      dmp keys create --scope server --site acme-gmbh --name "shop backend"
    """
    shared = tuple(dict.fromkeys(a.strip() for a in audiences.split(",") if a.strip()))
    if (scope == apikeys.Scope.PARTNER.value) != bool(shared):
        fail("--audiences is needed for a partner key and only for one")
    if (scope == apikeys.Scope.SERVER.value) != bool(site_id):
        fail("--site is needed for a server key and only for one")
    if site_id and sites.get_site(obj.redis, site_id) is None:
        fail(f"no site {site_id!r} (see dmp sites list)")
    known = {s.definition.id for s in definitions.list_segments(obj.redis)}
    unknown = [a for a in shared if a not in known]
    if unknown:
        fail(f"no segment {unknown[0]!r} (apply it first: dmp segments apply FILE)")
    key = apikeys.create_key(obj.redis, apikeys.Scope(scope), name, shared, site_id)
    click.echo(f"{scope} key created; store it now, dmp keeps only its hash:")
    click.echo(key)


@keys_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_ctx
def keys_list(obj: Context, as_json: bool) -> None:
    """List API keys by hash prefix (the keys themselves are not stored)."""
    found = apikeys.list_keys(obj.redis)
    if as_json:
        print_json(
            [
                {
                    "id": k.key_hash[:12],
                    "scope": k.scope.value,
                    "name": k.name,
                    "created": k.created,
                    "audiences": list(k.audiences),
                    "site": k.site or None,
                }
                for k in found
            ]
        )
        return
    if not found:
        click.echo("no keys (dmp keys create --scope admin|import|partner|server)")
        return
    click.echo(f"{'ID':<12}  {'SCOPE':<8} {'CREATED':<25} {'NAME':<20} FOR")
    for k in found:
        shared = ", ".join(k.audiences) or (f"site {k.site}" if k.site else "-")
        click.echo(f"{k.key_hash[:12]}  {k.scope.value:<8} {k.created:<25} {k.name:<20} {shared}")


@keys_group.command("revoke")
@click.argument("key_id")
@pass_ctx
def keys_revoke(obj: Context, key_id: str) -> None:
    """Revoke the key whose id (hash prefix, 8+ characters) is KEY_ID."""
    if len(key_id) < 8 or any(c not in "0123456789abcdef" for c in key_id):
        fail("a key id is 8 or more hex digits, as `dmp keys list` shows")
    if apikeys.revoke_key(obj.redis, key_id) == 0:
        fail(f"no key with id {key_id}")
    click.echo(f"revoked key {key_id}")
