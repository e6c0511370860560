"""The forms of the sites and keys pages: a new site, a new API key, each checked as the
CLI checks it (``dmp sites add``, ``dmp keys create``), with messages in the page's
language."""

from __future__ import annotations

import re

import redis
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import SelectField, SelectMultipleField, StringField, TextAreaField
from wtforms.validators import InputRequired, Length

from dmp.access import sites
from dmp.access.apikeys import Scope
from dmp.membership import definitions
from dmp.ui.pages import options

MAX_DOMAINS = 20
SCOPES = {
    Scope.ADMIN.value: _l("Admin: the whole admin API"),
    Scope.SERVER.value: _l("Server: one site's servers send trusted data"),
    Scope.IMPORT.value: _l("Import: other systems' webhooks send data"),
    Scope.PARTNER.value: _l("Partner: an ad tool pulls the audiences shared with it"),
}
_SPLIT = re.compile(r"[\s,;]+")


class SiteForm(FlaskForm):
    """A new site: its name and domains."""

    name = StringField(_l("Site name"), validators=[InputRequired(), Length(max=100)])
    domains = TextAreaField(
        _l("Domains"),
        validators=[InputRequired(), Length(max=2000)],
        description=_l("One or more, separated by commas or new lines, such as example.com"),
    )

    def cleaned(self, r: redis.Redis) -> tuple[str, list[str]] | None:
        """Return the name and the normalised domains, or None with the errors set."""
        if not self.validate():
            return None
        name = (self.name.data or "").strip()
        try:
            site_id = sites.slugify(name)
        except sites.SiteError:
            self.name.errors = [_("A site name needs 1 to 64 letters or digits.")]
            return None
        if sites.get_site(r, site_id) is not None:
            self.name.errors = [_("A site with the id %(id)s exists already.", id=site_id)]
            return None
        domains = self._domains()
        return (name, domains) if domains else None

    def _domains(self) -> list[str]:
        found = [d for d in _SPLIT.split(self.domains.data or "") if d]
        if not found:
            self.domains.errors = [_("A site needs at least one domain.")]
            return []
        if len(found) > MAX_DOMAINS:
            self.domains.errors = [_("At most %(n)d domains.", n=MAX_DOMAINS)]
            return []
        out = []
        for text in found:
            try:
                out.append(sites.normalise_domain(text))
            except sites.SiteError:
                self.domains.errors = [_("Not a domain name: %(domain)s", domain=text[:100])]
                return []
        return out


class KeyForm(FlaskForm):
    """A new API key: scope, a note on whom it is for, the site or the audiences."""

    scope = SelectField(_l("Scope"), choices=options(SCOPES.items()), validators=[InputRequired()])
    name = StringField(
        _l("Key name"),
        validators=[Length(max=100)],
        description=_l("A note on whom the key is for, such as the shop backend"),
    )
    site = SelectField(_l("Site (server keys)"), choices=[], default="")
    audiences = SelectMultipleField(_l("Audiences shared (partner keys)"), choices=[])

    def offer(self, r: redis.Redis) -> None:
        """Fill the choices of sites and segments from what is stored."""
        known = [(s.site_id, s.name) for s in sites.list_sites(r)]
        self.site.choices = options([("", _("No site")), *known])
        self.audiences.choices = options(
            (s.definition.id, s.definition.name) for s in definitions.list_segments(r)
        )

    def cleaned(self) -> tuple[Scope, str, tuple[str, ...], str] | None:
        """Return scope, name, audiences and site, or None with the errors set."""
        if not self.validate():
            return None
        scope = Scope(self.scope.data)
        site, shared = self.site.data or "", tuple(self.audiences.data or ())
        if (scope is Scope.SERVER) != bool(site):
            self.site.errors = [_("A server key needs a site, and only a server key has one.")]
            return None
        if (scope is Scope.PARTNER) != bool(shared):
            message = _("A partner key needs audiences, and only a partner key has them.")
            self.audiences.errors = [message]
            return None
        return scope, (self.name.data or "").strip(), shared, site
