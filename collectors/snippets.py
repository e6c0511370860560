"""The HTML a site embeds: the JS tag and the tracking pixel, ready to paste.

One place for the texts: ``dmp sites snippet`` prints them and the UI's sites page shows
them, filled with the site's public write key and the address dmp answers on. Neither
grants any consent by itself:

- the tag follows the page's consent-management platform (IAB TCF v2.2 or Google
  Consent Mode v2) by itself, and a site without one calls ``dmp.consent([...])`` from its
  own banner;
- the pixel's script asks the page's TCF CMP and sends its TC string (``gdpr=1&
  gdpr_consent=…``), from which dmp derives the consent; without a CMP, or where no script
  runs (the ``<noscript>`` image), a hit only counts in aggregate unless the page adds the
  categories the visitor agreed to as ``&consent=analytics,ads``;
- in ads and emails an ad server fills IAB's macros ``${GDPR}`` and
  ``${GDPR_CONSENT_<vendor id>}``, when dmp's operator is a registered TCF vendor.
"""

from __future__ import annotations

from dataclasses import dataclass

from collectors.pixel import PATH as PIXEL_PATH

TAG_PATH = "/dmp.js"
_STUB = (
    "<script>window.dmp = window.dmp || {q: []};\n"
    '  ["consent", "track", "identify", "page"].forEach(function (m) {\n'
    "    window.dmp[m] = window.dmp[m] || function () { window.dmp.q.push([m, arguments]); };\n"
    "  });</script>\n"
)
_TAG_NOTE = (
    "<!-- dmp tag, in <head>. It follows your consent banner by itself when it is an IAB TCF\n"
    "     v2.2 CMP or uses Google Consent Mode v2. Any other banner calls, when the visitor\n"
    '     decides: dmp.consent(["analytics", "ads"]) (what they agreed to; "email" too), and\n'
    "     dmp.consent([]) when they withdraw. Nothing is identified before that. -->\n"
)
# The pixel's page script: it waits for the CMP's decision, then sends one hit with the TC
# string (dmp derives the consent from it with the site's purpose rules, DMP_TCF_*).
_PIXEL_SCRIPT = """<script>(function (w) {
  var src = "%(src)s&url=" + encodeURIComponent(w.location.href);
  function hit(consent) { new Image(1, 1).src = src + consent; }
  if (typeof w.__tcfapi !== "function") return hit("");
  w.__tcfapi("addEventListener", 2, function (tc, ok) {
    if (!ok || (tc.eventStatus !== "tcloaded" && tc.eventStatus !== "useractioncomplete")) return;
    w.__tcfapi("removeEventListener", 2, function () {}, tc.listenerId);
    hit(tc.gdprApplies ? "&gdpr=1&gdpr_consent=" + encodeURIComponent(tc.tcString) : "&gdpr=0");
  });
})(window);</script>"""
_PIXEL_NOTE = (
    "<!-- dmp pixel, for a page without the tag. The script sends the consent of the page's\n"
    "     IAB TCF CMP; without one (and in <noscript>) a hit counts in aggregate only, unless\n"
    "     you add &consent= and the categories the visitor agreed to (analytics,ads). -->\n"
)


@dataclass(frozen=True, slots=True)
class Snippet:
    """One text to paste, with what it is for."""

    name: str  # tag, pixel, ad_pixel
    title: str
    html: str


def _base(base_url: str) -> str:
    return base_url.rstrip("/")


def tag_snippet(base_url: str, write_key: str) -> str:
    """Return the tag's ``<script>`` lines for a site's write key on dmp at ``base_url``
    (calls made before the tag loads wait in its queue), with how consent reaches it."""
    src = f"{_base(base_url)}{TAG_PATH}"
    return f'{_TAG_NOTE}{_STUB}<script async src="{src}" data-key="{write_key}"></script>'


def pixel_snippet(base_url: str, write_key: str) -> str:
    """Return the pixel for a page without the tag: a script sending the page's TCF
    consent, and a ``<noscript>`` image that counts in aggregate only."""
    src = f"{_base(base_url)}{PIXEL_PATH}?k={write_key}&e=page"
    script = _PIXEL_SCRIPT % {"src": src}
    image = f'<noscript><img src="{src}" width="1" height="1" alt=""></noscript>'
    return f"{_PIXEL_NOTE}{script}\n{image}"


def ad_pixel_snippet(base_url: str, write_key: str, vendor_id: int) -> str:
    """Return the pixel for ads and emails served by an ad server that fills IAB's TCF
    macros for ``vendor_id`` (dmp's operator's TCF vendor id); '' without one."""
    if vendor_id <= 0:
        return ""
    query = f"k={write_key}&e=impression&gdpr=${{GDPR}}&gdpr_consent=${{GDPR_CONSENT_{vendor_id}}}"
    src = f"{_base(base_url)}{PIXEL_PATH}?{query}"
    return f'<img src="{src}" width="1" height="1" alt="">'


def snippets(base_url: str, write_key: str, vendor_id: int = 0) -> list[Snippet]:
    """Return every snippet of a site, in the order a web developer needs them."""
    out = [
        Snippet("tag", "dmp tag: in <head> of every page", tag_snippet(base_url, write_key)),
        Snippet(
            "pixel",
            "dmp pixel: where the tag cannot run",
            pixel_snippet(base_url, write_key),
        ),
    ]
    ad = ad_pixel_snippet(base_url, write_key, vendor_id)
    if ad:
        out.append(Snippet("ad_pixel", "dmp pixel in ads: the ad server fills the macros", ad))
    return out
