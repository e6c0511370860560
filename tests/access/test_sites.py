"""Sites: a name, its domains and one write key, found per hit through a cache."""

from __future__ import annotations

import pytest

from dmp.access.sites import (
    SiteCache,
    SiteError,
    add_site,
    get_site,
    list_sites,
    normalise_domain,
    remove_site,
)


@pytest.mark.parametrize(
    ("given", "host"),
    [
        ("Example.COM", "example.com"),
        ("https://www.example.com/path?q=1", "www.example.com"),
        ("example.com:8443", "example.com"),
        ("example.com.", "example.com"),
    ],
)
def test_domains_are_normalised_to_bare_hosts(given: str, host: str) -> None:
    """A domain or URL becomes its lowercase host, without port, path or final dot."""
    assert normalise_domain(given) == host


@pytest.mark.parametrize("given", ["", "not a domain", "exa mple.com", "-bad-.com", "ä" * 300])
def test_bad_domains_are_refused(given: str) -> None:
    """Anything that is not a host name is a SiteError naming it."""
    with pytest.raises(SiteError):
        normalise_domain(given)


def test_a_site_is_added_once_and_found_by_its_write_key(redis) -> None:
    """The write key (shown once) leads to the site; a second site of that name is refused."""
    site, key = add_site(redis, "Acme GmbH", ["example.com", "https://shop.example.com/"])
    assert site.site_id == "acme-gmbh" and site.domains == ("example.com", "shop.example.com")
    assert SiteCache(redis, 60).site_for_key(key) == site == get_site(redis, "acme-gmbh")
    with pytest.raises(SiteError):
        add_site(redis, "acme gmbh", ["example.org"])


def test_a_removed_sites_key_finds_nothing(redis) -> None:
    """Removing a site removes its write key; list_sites no longer shows it."""
    _, key = add_site(redis, "Acme GmbH", ["example.com"])
    remove_site(redis, "acme-gmbh")
    assert SiteCache(redis, 60).site_for_key(key) is None and list_sites(redis) == []
    with pytest.raises(SiteError):
        remove_site(redis, "acme-gmbh")


@pytest.mark.parametrize("key", ["", "wk_" + "x" * 200, "wk_ünïcode", "wk_unknown"])
def test_keys_that_are_no_sites_find_nothing(redis, key: str) -> None:
    """Empty, oversize, non-ASCII and unknown write keys lead to no site, without error."""
    assert SiteCache(redis, 60).site_for_key(key) is None


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://example.com", True),
        ("https://www.example.com:8443", True),
        ("https://notexample.com", False),
        ("https://example.com.evil.net", False),
        ("null", False),
        ("", False),
    ],
)
def test_the_origin_check_allows_a_sites_domains_and_subdomains(redis, origin, allowed) -> None:
    """A CORS Origin on a site's domain or a subdomain of it is allowed; a look-alike is not."""
    add_site(redis, "Acme GmbH", ["example.com"])
    assert SiteCache(redis, 60).any_allows_origin(origin) is allowed
