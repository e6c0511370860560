"""Every kind of destination, by the name ``dmp destinations add KIND`` takes: an explicit
registry (a module is a destination only once it is listed here)."""

from __future__ import annotations

from exporters.brevo import BrevoList
from exporters.cleverreach import CleverReachGroup
from exporters.destination import Destination
from exporters.files import FileDestination
from exporters.google import GoogleCustomerMatch
from exporters.linkedin import LinkedInAudience
from exporters.mailchimp import MailchimpAudience
from exporters.meta import MetaAudience
from exporters.webhook import WebhookDestination

KINDS: dict[str, type[Destination]] = {
    "meta": MetaAudience,
    "google": GoogleCustomerMatch,
    "linkedin": LinkedInAudience,
    "mailchimp": MailchimpAudience,
    "brevo": BrevoList,
    "cleverreach": CleverReachGroup,
    "webhook": WebhookDestination,
    "file": FileDestination,
}


def kind_of(name: str) -> type[Destination]:
    """Return the destination class of a kind (KeyError names the known kinds)."""
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown kind {name!r} (one of {', '.join(sorted(KINDS))})") from None
