"""The HTML a site embeds: the tracking pixel and the JS tag, as the README documents them.

One place for both texts: the UI's sites page shows them ready to copy, filled with the
site's public write key and the address dmp answers on.
"""

from __future__ import annotations

from collectors.pixel import PATH as PIXEL_PATH

TAG_PATH = "/dmp.js"
# What the pixel cannot know by itself: the page it is on and what the visitor consented
# to (the categories analytics, ads, email, comma-separated), filled in by the page.
PAGE_URL = "PAGE_URL"
CONSENT = "CONSENT"
_STUB = (
    "<script>window.dmp = window.dmp || {q: []};\n"
    '  ["consent", "track", "identify", "page"].forEach(function (m) {\n'
    "    window.dmp[m] = window.dmp[m] || function () { window.dmp.q.push([m, arguments]); };\n"
    "  });</script>\n"
)


def pixel_snippet(base_url: str, write_key: str) -> str:
    """Return the pixel's ``<img>`` for a site's write key on dmp at ``base_url``."""
    query = f"k={write_key}&e=page&url={PAGE_URL}&consent={CONSENT}"
    src = f"{base_url.rstrip('/')}{PIXEL_PATH}?{query}"
    return f'<img src="{src}"\n     width="1" height="1" alt="">'


def tag_snippet(base_url: str, write_key: str) -> str:
    """Return the tag's ``<script>`` lines for a site's write key on dmp at ``base_url``
    (calls made before the tag loads wait in its queue)."""
    src = f"{base_url.rstrip('/')}{TAG_PATH}"
    return f'{_STUB}<script async src="{src}" data-key="{write_key}"></script>'
