"""Data minimisation at the edge: what a hit's URL, referrer and title may keep.

A page's URL often carries more than the page: ``?email=…`` from a form, a password-reset
token in the path, ``;jsessionid=…``, an OAuth ``#access_token=…``. Before a hit is put on
the stream (or spooled), its URLs keep their scheme, host, path and plain anchor, and of
the query only campaign tags (``utm_*``) and the parameters its site lists; path segments,
kept values and titles lose anything that looks like an email address or a token.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import unquote

REDACTED = "[redacted]"
KEEP_PREFIXES = ("utm_",)  # query parameters every site keeps: campaign tags

# A token: 20+ letters and digits in a row with both in them (hex digests, session ids,
# base64 secrets, JWTs); long slugs have hyphens, long words have no digits. Runs are
# found in one pass and judged in Python: a regex that looks ahead would scan a long run
# again from each of its letters.
_RUN = re.compile(r"[A-Za-z0-9]{20,}")
# An email address: up to 64 characters but space before the @, then a domain (no @ on
# either side, so that a run of @s cannot make the regex try every split of it). "@anna"
# is no address. The domain alone is the cheap test whether there is one at all.
_DOMAIN = r"@[^\s@/?#&=:;,<>\"'()\[\]]+\.[A-Za-z]{2,}"
_AT_DOMAIN = re.compile(_DOMAIN)
_EMAIL = re.compile(r"[^\s@]{0,64}" + _DOMAIN)
_ANCHOR = re.compile(r"[\w/.\-]{0,128}")  # #pricing-table, #/settings/profile


def redact_url(url: str, keep: frozenset[str] = frozenset()) -> str:
    """Return ``url`` without what may identify or authenticate a person: query parameters
    but ``utm_*`` and those in ``keep`` (lowercase names), user info, path parameters,
    fragments other than plain anchors, emails and tokens."""
    if not _suspect(url):
        return url  # most URLs: nothing to look at closer
    return _minimise(url, keep)


@lru_cache(maxsize=4096)  # a landing page's URL comes again and again
def _minimise(url: str, keep: frozenset[str]) -> str:
    # By hand rather than urlsplit: this runs on the pixel's path, for many hits.
    url = url.replace("\\", "/")  # browsers read a backslash as a slash
    rest, _, fragment = url.partition("#")
    rest, _, query = rest.partition("?")
    scheme, sep, rest = rest.partition("://")
    authority, slash, path = rest.partition("/")
    authority = authority.rpartition("@")[2]  # user:password@ goes
    if path and _suspect(_decoded(path)):
        path = "/".join(_segment(s) for s in path.split("/"))
    kept = "&".join(_kept(pair) for pair in query.split("&") if _named(pair, keep))
    out = f"{scheme}{sep}{authority}{slash}{path}"
    if kept:
        out += "?" + kept
    if fragment and _ANCHOR.fullmatch(fragment) and not _secret(fragment):
        out += "#" + fragment
    return out


def redact_text(text: str) -> str:
    """Return ``text`` with emails and tokens in it replaced by REDACTED."""
    emails = "@" in text and _AT_DOMAIN.search(text) is not None
    if not emails and not _RUN.search(text):
        return text
    return _RUN.sub(_token_or_run, _EMAIL.sub(REDACTED, text) if emails else text)


def _suspect(url: str) -> bool:
    return (
        "?" in url
        or "#" in url
        or "@" in url
        or ";" in url
        or "%" in url
        or "\\" in url
        or _RUN.search(url) is not None
    )


def _segment(segment: str) -> str:
    segment = segment.split(";", 1)[0]  # ;jsessionid=… and other path parameters
    return REDACTED if _secret(segment) else segment


def _named(pair: str, keep: frozenset[str]) -> bool:
    """Return whether a query pair is kept: a campaign tag or the site's, and no secret."""
    name = _decoded(pair.partition("=")[0]).lower()
    return (name.startswith(KEEP_PREFIXES) or name in keep) and not _secret(name)


def _kept(pair: str) -> str:
    name, sep, value = pair.partition("=")
    return f"{name}{sep}{REDACTED}" if _secret(value) else pair


def _secret(text: str) -> bool:
    """Return whether a path segment, name or value looks like an email address or a token."""
    plain = _decoded(text)
    if "@" in plain and _AT_DOMAIN.search(plain):
        return True
    return any(map(_is_token, _RUN.findall(plain)))


def _decoded(text: str) -> str:
    """Return ``text`` percent-decoded until it stops changing (at most three times:
    a URL nested in a campaign tag is encoded twice)."""
    for _ in range(3):
        if "%" not in text:
            break
        plain = unquote(text)
        if plain == text:
            break
        text = plain
    return text


def _is_token(run: str) -> bool:
    return not run.isdigit() and not run.isalpha()  # ASCII letters and digits, both


def _token_or_run(match: re.Match[str]) -> str:
    return REDACTED if _is_token(match.group(0)) else match.group(0)
