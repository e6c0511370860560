"""Whether a page may send with a site's write key, and why: what ``dmp sites check``
says. Hosts are matched as a browser's Origin is (:func:`dmp.access.sites.covering_domain`,
one place for the rule): ports and schemes do not matter."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

import redis

from dmp.access.sites import SiteError, covering_domain, get_site, list_sites

HOST = re.compile(r"[^\s/\\?#@]+\Z")  # what a URL's host can be: printable, no separators

MAX_URL = 2048  # characters of a page URL `dmp sites check` reads


@dataclass(frozen=True, slots=True)
class OriginVerdict:
    """Whether pages on a host may send with one site's write key: the domain that
    allows it (empty if none) and the site's domains."""

    site_id: str
    allowed: bool
    domain: str
    domains: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PageCheck:
    """What ``dmp sites check`` found for a page URL: its host and each site's verdict."""

    url: str
    host: str
    verdicts: tuple[OriginVerdict, ...]

    @property
    def allowed(self) -> bool:
        """Return whether some site checked allows the page's host."""
        return any(v.allowed for v in self.verdicts)


def page_host(url: str) -> str:
    """Return the lowercase host of an http(s) page URL; SiteError for anything else."""
    if len(url) > MAX_URL:
        raise SiteError(f"a page URL has at most {MAX_URL} characters (this one {len(url)})")
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""  # as allows_origin sees a browser's Origin
    except ValueError:
        parts, host = None, ""
    if (
        parts is None
        or parts.scheme.lower() not in ("http", "https")
        or not (HOST.match(host) and host.isprintable())
    ):
        raise SiteError(f"not an http(s) page URL with a host: {url[:100]!r}")
    return host


def check_page(r: redis.Redis, url: str, site_id: str | None = None) -> PageCheck:
    """Return whether a page at ``url`` may send with each site's write key (or the one
    given), and why; SiteError for a URL that is no http(s) page or an unknown site."""
    host = page_host(url)
    if site_id is None:
        checked = list_sites(r)
    else:
        site = get_site(r, site_id)
        if site is None:
            raise SiteError(f"no site {site_id[:80]!r} (dmp sites list)")
        checked = [site]
    verdicts = []
    for site in checked:
        domain = covering_domain(host, site.domains)
        verdicts.append(OriginVerdict(site.site_id, domain is not None, domain or "", site.domains))
    return PageCheck(url, host, tuple(verdicts))
