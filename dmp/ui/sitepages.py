"""The sites and keys pages: every site with its pixel and tag ready to copy, a new site;
for admins the API keys: list, create (the key shown once) and revoke."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask import Response, abort, redirect, render_template, request, url_for
from flask_babel import gettext as _

from collectors.snippets import ad_pixel_snippet, pixel_snippet, tag_snippet
from dmp.access import apikeys, sites
from dmp.ui.pages import is_admin, page_blueprint
from dmp.ui.siteforms import SCOPES, KeyForm, SiteForm
from dmp.web.deps import current_deps

bp = page_blueprint("site_pages", __name__, "/sites")
PLACEHOLDER = "WRITE_KEY"  # a site added before its write key was kept readable
KEY_ID = 12  # hex digits of a key's digest that name it (as `dmp keys list` shows)


@dataclass(frozen=True, slots=True)
class SiteView:
    """A site as its card shows it."""

    site: sites.Site
    created_ms: int | None
    write_key: str | None
    pixel: str
    tag: str
    ad_pixel: str  # '' unless dmp's operator is a registered TCF vendor (DMP_TCF_VENDOR_ID)


def _created_ms(text: str) -> int | None:
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        return None


def _views() -> list[SiteView]:
    deps, base = current_deps(), request.host_url
    out = []
    for site in sites.list_sites(deps.redis):
        key = sites.public_write_key(deps.redis, site.site_id)
        shown = key or PLACEHOLDER
        snippets = (
            pixel_snippet(base, shown),
            tag_snippet(base, shown),
            ad_pixel_snippet(base, shown, deps.config.tcf_vendor_id),
        )
        out.append(SiteView(site, _created_ms(site.created), key, *snippets))
    return out


def _sites_page(form: SiteForm, status: int = 200) -> tuple[str, int]:
    added = request.args.get("added", "")[:64]
    page = render_template(
        "ui/sites/index.html",
        views=_views(),
        form=form,
        added=added,
    )
    return page, status


@bp.get("/")
def index() -> tuple[str, int]:
    """Show every site with its snippets (and, for admins, the form for a new one)."""
    return _sites_page(SiteForm(formdata=None))


@bp.post("/")
def add_site() -> Response | tuple[str, int]:
    """Add a site (admins): back to the list, at the new site's snippets."""
    _admins_only()
    form = SiteForm()
    r = current_deps().redis
    found = form.cleaned(r)
    if found is None:
        return _sites_page(form, 422)
    try:
        site = sites.add_site(r, found[0], found[1])[0]
    except sites.SiteError:  # added at the same moment by someone else
        form.name.errors = [_("A site with this name exists already.")]
        return _sites_page(form, 409)
    target = url_for("site_pages.index", added=site.site_id, _anchor=f"site-{site.site_id}")
    return redirect(target, 303)


def _admins_only() -> None:
    if not is_admin():
        abort(403)


def _keys_page(form: KeyForm, status: int = 200, **extra: object) -> tuple[str, int]:
    keys = apikeys.list_keys(current_deps().redis)
    names = {c.value: str(c.label) for c in form.site.choices}  # type: ignore[union-attr]
    page = render_template(
        "ui/sites/keys.html",
        keys=keys,
        form=form,
        scopes=SCOPES,
        site_names=names,
        key_id=KEY_ID,
        created_ms=_created_ms,
        **extra,
    )
    return page, status


@bp.get("/keys")
def keys() -> tuple[str, int]:
    """List the API keys (never the keys themselves) with the form for a new one (admins)."""
    _admins_only()
    form = KeyForm(formdata=None)
    form.offer(current_deps().redis)
    revoked = request.args.get("revoked", "")[:KEY_ID]
    return _keys_page(form, revoked=revoked)


@bp.post("/keys")
def create_key() -> tuple[str, int]:
    """Create a key (admins) and show it this once."""
    _admins_only()
    r = current_deps().redis
    form = KeyForm()
    form.offer(r)
    found = form.cleaned()
    if found is None:
        return _keys_page(form, 422)
    scope, name, shared, site = found
    key = apikeys.create_key(r, scope, name, shared, site)
    page = render_template("ui/sites/new_key.html", key=key, scope=scope.value, name=name)
    return page, 201


@bp.post("/keys/<key_id>/revoke")
def revoke_key(key_id: str) -> Response:
    """Revoke the key ``key_id`` names (admins); back to the list, which says so."""
    _admins_only()
    if len(key_id) != KEY_ID or any(c not in "0123456789abcdef" for c in key_id):
        abort(404)
    if apikeys.revoke_key(current_deps().redis, key_id) == 0:
        abort(404)
    return redirect(url_for("site_pages.keys", revoked=key_id), 303)
