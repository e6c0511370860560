"""`dmp sites check URL` and `dmp sites domains ID`: whether a page may send with a
site's key and why, and the way to fix it; bad input exits 2 with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dmp.cli import cli


def test_an_allowed_page_exits_0_naming_the_domain(runner, site):
    """A subdomain on another port is allowed; the answer names the domain and says that
    only the host counts."""
    result = runner.invoke(cli, ["sites", "check", "http://shop.acme.de:3000/p"])
    assert result.exit_code == 0, result.output
    assert "page host shop.acme.de" in result.output
    assert "scheme and port do not matter" in result.output
    assert "acme-gmbh: allowed, shop.acme.de is a subdomain of its domain acme.de" in result.output


def test_a_refused_page_exits_1_with_the_reason_and_the_fix(runner, site):
    """Not under any domain: exit 1, the site's domains, and the command that adds it;
    that command works, and the page is then allowed."""
    result = runner.invoke(cli, ["sites", "check", "https://www.acme.com/", "--site", "acme-gmbh"])
    assert result.exit_code == 1
    assert "www.acme.com is neither one of nor under its domains acme.de, localhost" in (
        result.output
    )
    fix = "dmp sites domains acme-gmbh --add www.acme.com"
    assert f"fix: add the page's domain to its site: {fix}" in result.output
    added = runner.invoke(cli, fix.split()[1:])
    assert added.exit_code == 0 and "www.acme.com" in added.output
    assert runner.invoke(cli, ["sites", "check", "https://www.acme.com/"]).exit_code == 0


def test_check_json_prints_the_verdict(runner, redis, site):
    """--json gives the host, each site's verdict and the fix, with the same exit code."""
    from dmp.access.sites import add_site

    add_site(redis, "Shop", ["shop.example"])
    result = runner.invoke(cli, ["sites", "check", "https://acme.de/", "--json"])
    assert result.exit_code == 0
    verdict = json.loads(result.stdout)
    assert verdict["host"] == "acme.de" and verdict["allowed"] and verdict["fix"] is None
    assert verdict["sites"] == [
        {
            "site_id": "acme-gmbh",
            "allowed": True,
            "domain": "acme.de",
            "domains": ["acme.de", "localhost"],
        },
        {"site_id": "shop", "allowed": False, "domain": None, "domains": ["shop.example"]},
    ]
    refused = runner.invoke(cli, ["sites", "check", "https://x.org/", "--json"])
    assert refused.exit_code == 1
    assert json.loads(refused.stdout)["fix"] == "dmp sites domains SITE_ID --add x.org"


def test_without_sites_the_fix_is_to_add_one(runner, redis):
    """No site at all: not allowed, and the fix adds a site for the page's host."""
    result = runner.invoke(cli, ["sites", "check", "http://localhost:8080/"])
    assert result.exit_code == 1
    assert "there are no sites" in result.output
    assert "dmp sites add NAME --domain localhost" in result.output


def test_domains_without_options_prints_them(runner, site):
    """`sites domains ID` alone prints the site's domains."""
    result = runner.invoke(cli, ["sites", "domains", "acme-gmbh"])
    assert result.exit_code == 0 and result.output == "site acme-gmbh for acme.de, localhost\n"


def _dmp(config, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DMP_REDIS_URL": config.redis_url, "DMP_DATA_DIR": str(config.data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "dmp", *args], env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["sites", "check", "http://[::1"], "not an http(s) page URL"),
        (["sites", "check", "javascript:alert(document.cookie)"], "not an http(s) page URL"),
        (["sites", "check", "https://acme.de/" + "a" * 10_000], "at most 2048 characters"),
        (["sites", "check", "acme.de"], "not an http(s) page URL"),
        (["sites", "check", "http://ac\x1bme.de/"], "not an http(s) page URL"),
        (["sites", "check", "https://acme.de/", "--site", "nope"], "no site 'nope'"),
        (["sites", "domains", "nope"], "no site 'nope'"),
        (["sites", "domains", "acme-gmbh", "--add", "not a domain"], "not a domain name"),
        (["sites", "domains", "acme-gmbh", "--remove", "acme.de", "--remove", "localhost"], ""),
        (["sites", "domains", "acme-gmbh", "--remove", "other.de"], "not a domain of site"),
    ],
)
def test_bad_input_exits_2_with_one_line(config, site, args, says):
    """Malformed, hostile and oversize URLs, unknown sites and impossible domain changes
    exit 2 with one short line on stderr."""
    done = _dmp(config, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dmp: error: "), done.stderr
    assert says in lines[0] and len(lines[0]) < 400 and lines[0].isprintable()
