"""Which pages may send with a site's write key (by host only), and changing a site's
domains."""

from __future__ import annotations

import pytest

from dmp.access.pagecheck import MAX_URL, OriginVerdict, check_page, page_host
from dmp.access.sites import (
    SiteCache,
    SiteError,
    add_site,
    change_domains,
    covering_domain,
    get_site,
)


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://www.Acme.de/pricing?x=1#top", "www.acme.de"),
        ("http://localhost:3000/", "localhost"),
        ("HTTPS://user@acme.de:8443", "acme.de"),
        ("  https://acme.de  ", "acme.de"),
    ],
)
def test_a_page_url_gives_its_host(url, host):
    """The host is lowercased; scheme, port, user, path and fragment fall away."""
    assert page_host(url) == host


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "ftp://acme.de/",
        "acme.de",
        "http:///path",
        "http://[::1",
        "http://acme.de\x00evil/",
        "http://a b.de/",
        "https://acme.de/" + "x" * MAX_URL,
        "",
    ],
)
def test_what_is_no_http_page_url_is_refused(url):
    """Other schemes, no host, a broken or unprintable host, an oversize URL: SiteError."""
    with pytest.raises(SiteError):
        page_host(url)


def test_the_rule_is_the_one_the_collectors_use(redis):
    """A host is allowed when it is a domain or under one, never a domain's parent or a
    look-alike; the same rule as Site.allows_origin."""
    site, _ = add_site(redis, "Acme", ["acme.de", "localhost"])
    cases = {
        "acme.de": "acme.de",
        "shop.acme.de": "acme.de",
        "localhost": "localhost",
        "evilacme.de": None,
        "acme.de.evil.com": None,
        "de": None,
    }
    for host, domain in cases.items():
        assert covering_domain(host, site.domains) == domain, host
        assert site.allows_origin(f"https://{host}:1234") is (domain is not None), host


def test_check_page_gives_each_sites_verdict(redis):
    """Every site is checked, or the one given; the matching domain is named."""
    add_site(redis, "Acme", ["acme.de"])
    add_site(redis, "Shop", ["shop.example", "acme-shop.de"])
    found = check_page(redis, "https://blog.acme.de:8080/p")
    assert found.host == "blog.acme.de" and found.allowed
    assert found.verdicts == (
        OriginVerdict("acme", True, "acme.de", ("acme.de",)),
        OriginVerdict("shop", False, "", ("shop.example", "acme-shop.de")),
    )
    only = check_page(redis, "https://blog.acme.de/", "shop")
    assert not only.allowed and [v.site_id for v in only.verdicts] == ["shop"]
    assert not check_page(redis, "https://acme.de/", "shop").allowed
    with pytest.raises(SiteError, match="no site 'nope'"):
        check_page(redis, "https://acme.de/", "nope")


def test_domains_are_added_and_removed_and_one_is_kept(redis):
    """Domains are normalised as add_site does; duplicates collapse; removing an unknown
    or the last domain is refused and changes nothing; the collectors see the change."""
    site, key = add_site(redis, "Acme", ["acme.de"])
    changed = change_domains(redis, "acme", add=["https://Shop.Acme.com/x", "acme.de"])
    assert changed.domains == ("acme.de", "shop.acme.com")
    assert get_site(redis, "acme").domains == ("acme.de", "shop.acme.com")
    assert change_domains(redis, "acme", remove=["acme.de"]).domains == ("shop.acme.com",)
    assert SiteCache(redis, 0).site_for_key(key).allows_origin("https://shop.acme.com")
    for add, remove, message in [
        ([], ["shop.acme.com"], "at least one domain"),
        ([], ["acme.de"], "not a domain of site acme"),
        (["not a domain"], [], "not a domain name"),
    ]:
        with pytest.raises(SiteError, match=message):
            change_domains(redis, "acme", add=add, remove=remove)
    assert get_site(redis, "acme").domains == ("shop.acme.com",)
    with pytest.raises(SiteError, match="no site"):
        change_domains(redis, "nope", add=["acme.de"])
