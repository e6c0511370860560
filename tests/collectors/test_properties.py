"""Properties, tried on generated input (hypothesis): the pixel answers its GIF to any
query string and stores only well-formed hits; minimised URLs and titles keep no email
address and no token, and minimising twice changes nothing."""

from __future__ import annotations

import re
import string
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.pixel import GIF
from collectors.redaction import redact_text, redact_url
from dmp.storage import keyspace
from tests.factories import stream_hits

EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)*\.[A-Za-z]{2,}")
TOKEN = re.compile(r"(?=[A-Za-z0-9]*[0-9])(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{20,}")
emails = st.emails().map(str)
tokens = st.text(string.ascii_letters + string.digits, min_size=20, max_size=64).filter(
    lambda t: TOKEN.fullmatch(t) is not None
)
words = st.text(string.ascii_lowercase + "-", min_size=1, max_size=12)
secrets = st.one_of(emails, tokens)
segments = st.one_of(words, secrets, secrets.map(lambda s: quote(s, safe="")))
params = st.tuples(
    st.one_of(words, st.sampled_from(["utm_source", "q", "sid", "email"])),
    st.one_of(words, secrets),
)
urls = st.builds(
    lambda host, path, query, fragment: (
        f"https://{host}/{'/'.join(path)}"
        + ("?" + "&".join(f"{k}={v}" for k, v in query) if query else "")
        + (f"#{fragment}" if fragment else "")
    ),
    st.sampled_from(["example.com", "anna:pw@example.com", "www.example.com:8443"]),
    st.lists(segments, max_size=4),
    st.lists(params, max_size=4),
    st.one_of(st.none(), words, secrets, st.just("access_token=abc&x=1")),
)
FAST = settings(max_examples=300, deadline=None, database=None)


def _clean(text: str) -> bool:
    return "@" not in text and "%40" not in text.lower() and TOKEN.search(text) is None


@FAST
@given(urls, st.frozensets(st.sampled_from(["q", "sid", "email"])))
def test_minimised_urls_keep_no_secret_and_are_stable(url: str, keep: frozenset[str]) -> None:
    """Whatever a URL carries, its minimised form has no email or token, and minimising
    it again gives the same URL."""
    once = redact_url(url, keep)
    assert _clean(once), once
    assert redact_url(once, keep) == once


@FAST
@given(st.lists(st.one_of(words, secrets, st.text(max_size=10)), max_size=8))
def test_minimised_titles_keep_no_secret(parts: list[str]) -> None:
    """A title made of words, emails and tokens keeps the words only."""
    once = redact_text(" ".join(parts))
    assert EMAIL.search(once) is None and TOKEN.search(once) is None, once
    assert redact_text(once) == once


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.text(min_size=0, max_size=400))
def test_the_pixel_answers_the_gif_to_any_query(client, redis, write_key, query: str) -> None:
    """Any query string after the write key: 200 with the GIF, and what is stored (if
    anything) is a well-formed hit with minimised URLs."""
    redis.delete(keyspace.partition(0).stream)
    resp = client.get(f"/p.gif?k={write_key}&consent=analytics&{quote(query, safe='=&%')}")
    assert resp.status_code == 200 and resp.data == GIF
    for hit in stream_hits(redis):
        assert hit.site_id == "acme-gmbh" and len(hit.url) <= 2048
        assert hit.url == "" or (hit.url.startswith(("http://", "https://")) and _clean(hit.url))
