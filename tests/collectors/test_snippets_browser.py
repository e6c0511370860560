"""What `dmp sites snippet` prints, pasted as is into a page whose consent banner is an
IAB TCF v2.2 CMP (IAB's reference code, tests/collectors/pages_tag/cmp.mjs), in a real
headless Chromium: dmp follows the visitor's choices by itself, through the tag and
through the pixel's script."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from dmp.cli import cli
from dmp.people.identity import IdKind
from tests.chromium import page_server
from tests.collectors.browserpages import answered, dmp_cookie
from tests.factories import consent_of, person_of, stream_hits

CMP = (Path(__file__).parent / "pages_tag" / "cmp.mjs").read_text()
# The page of a site with a CMP: the CMP's stub first (as IAB's stub does: it queues the
# calls made before the CMP is there, and hands them over when asked with no arguments),
# then what the web developer pasted, then the CMP itself.
PAGE = """<!doctype html>
<html lang="de"><head><meta charset="utf-8"><link rel="icon" href="data:,">
<title>Webinar</title>
<script>window.__tcfapi = function () {
  var queue = window.__tcfapi.a = window.__tcfapi.a || [];
  if (!arguments.length) return queue;
  queue.push([].slice.call(arguments));
};</script>
%(pasted)s
<script type="importmap">
{"imports": {"@iabtcf/core": "/node_modules/@iabtcf/core/lib/mjs/index.js"}}
</script>
<script type="module">%(cmp)s</script>
</head><body><h1>Webinar</h1></body></html>
"""


@pytest.fixture
def pasted(runner, collector, site) -> dict[str, str]:
    """Return what `dmp sites snippet` prints for the site, by snippet name."""
    url = f"http://localhost:{collector[1]}"
    shown = runner.invoke(cli, ["sites", "snippet", site[0].site_id, "--url", url, "--json"])
    assert shown.exit_code == 0, shown.output
    return {s["name"]: s["html"] for s in json.loads(shown.output)}


@pytest.fixture
def pages(tmp_path: Path, pasted: dict[str, str]) -> Iterator[str]:
    """Serve one page per snippet (tag.html, pixel.html); return the pages' base URL."""
    for name in ("tag", "pixel"):
        html = PAGE % {"pasted": pasted[name], "cmp": CMP}
        (tmp_path / f"{name}.html").write_text(html)
    with page_server(tmp_path) as port:
        yield f"http://localhost:{port}"


def test_the_pasted_tag_follows_the_cmp_by_itself(tab, pages, redis, drain) -> None:
    """The banner shows: nothing identifies the visitor. Accept all: a person with ads and
    analytics consent, proven by the CMP's id. Withdraw: dmp's cookie is gone at once."""
    assert answered(tab, lambda: tab.goto(f"{pages}/tag.html")) == 204
    assert [h.uid for h in stream_hits(redis)] == [""]  # the page view, in aggregate only
    all_purposes = "choose([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])"
    assert answered(tab, lambda: tab.evaluate(all_purposes)) == 204
    cookie = dmp_cookie(tab)
    assert cookie is not None, "accepting in the CMP set no dmp_uid cookie"
    drain()
    person = person_of(redis, IdKind.UID, cookie["value"])
    for category in ("ads", "analytics"):
        record = consent_of(person, category)
        assert record["granted"] is True and record["version"].startswith("tcf:300:")
    assert answered(tab, lambda: tab.evaluate("choose([])")) == 204
    assert dmp_cookie(tab) is None
    assert tab.console == []


def test_the_pasted_pixel_sends_the_cmp_s_decision(tab, pages, collector, redis, drain) -> None:
    """A returning visitor whose CMP holds purposes 1, 7 and 9: the pixel's one hit
    carries the TC string, and dmp grants analytics but not ads from it."""
    with tab.expect_response(lambda r: "/p.gif?" in r.url) as answer:
        tab.goto(f"{pages}/pixel.html?tc=1,7,9")
    assert answer.value.status == 200
    assert "gdpr=1&gdpr_consent=" in answer.value.url
    [hit] = stream_hits(redis)
    assert hit.consent == {"analytics": True, "ads": False, "email": False}
    assert hit.url == f"{pages}/pixel.html"  # the page's own query is not a campaign tag
    assert hit.consent_version.startswith("tcf:300:")
    drain()
    person = person_of(redis, IdKind.UID, hit.uid)
    assert consent_of(person, "analytics")["granted"] is True
    assert consent_of(person, "ads")["granted"] is False
    assert tab.console == []
