"""The newsletter tools' own webhooks: Mailchimp, Brevo and CleverReach call dmp as they
would call anybody, and each event they report becomes a newsletter hit.

``collectors.newsletterformats`` reads each tool's format into the rows of
``collectors.newsletter`` (email, event, time, campaign, url, double_opt_in), with what
the tool said of the event (the tool, its own name for it, the reason it gave), which
the ``email`` consent's proof keeps. From there the hits take the path of any
newsletter event: deduplicated by a digest of the call's fields, skipped for an address
erased before, trusted, applied by the worker in event-time order. An event type dmp
does not act on is answered 200 and counted as ignored, so that the tool does not take
the hook for broken and disable it.

Every route takes an import key as ``?key=``: Mailchimp signs nothing and sends no
header of the caller's choosing, and CleverReach's call token is known only after the
hook's URL is registered; Brevo can send the key as a bearer token instead. Mailchimp
and CleverReach check the URL with a GET first, answered here too. See
docs/newsletter-webhooks.md.
"""

from __future__ import annotations

import logging
import time

from flask import Response, jsonify, request

from collectors.imports import ImportReport, RowError, enqueue_new, row_digest, storable
from collectors.newsletter import newsletter_hit
from collectors.newsletterformats import (
    BREVO,
    CLEVERREACH,
    MAILCHIMP,
    Reading,
    read_brevo,
    read_cleverreach,
    read_mailchimp,
)
from collectors.payload import read_body
from dmp.access.apikeys import Scope
from dmp.records import Source
from dmp.storage import metrics
from dmp.web.auth import scoped_blueprint
from dmp.web.deps import current_deps
from dmp.web.params import Param
from dmp.web.problems import Problem
from dmp.web.schema import Free, Obj, Text
from dmp.web.spec import BAD_PARAMETER, NO_KEY, TOO_LARGE, UNAVAILABLE, Reply, describe, problem

log = logging.getLogger(__name__)

bp = scoped_blueprint("newsletterhooks", __name__, Scope.IMPORT, Scope.ADMIN, query_fallback=True)
SECURITY = ("importKey", "adminKey", "importKeyQuery")
_SOURCE = Source.NEWSLETTER.value

DOUBLE_OPT_IN = Param(
    "double_opt_in",
    Text(enum=("true", "false")),
    description="Whether the list the tool reports on requires double opt-in (its webhook "
    "does not say): kept in the proof of each subscribe from it.",
)
COUNT = Free({"type": "integer", "minimum": 0})
COUNTS = Obj(
    {"accepted": COUNT, "duplicates": COUNT, "erased_before": COUNT, "ignored": COUNT},
    required=("accepted", "duplicates", "erased_before", "ignored"),
)
TAKEN = Reply(
    "Taken: how many events are new, had been received before, name a person erased "
    "before (skipped), or are of a kind dmp does not act on (ignored).",
    schema=COUNTS,
)
INVALID = problem("The call is not what the tool sends (``errors`` names each bad event).")
REPLIES = {200: TAKEN, 400: INVALID, 401: NO_KEY, 413: TOO_LARGE, 503: UNAVAILABLE}


@bp.get("/hooks/newsletter/mailchimp")
@describe(
    tag="import",
    security=SECURITY,
    replies={
        200: Reply("The URL is dmp's.", schema=Obj({"tool": Text()}, required=("tool",))),
        401: NO_KEY,
    },
)
def mailchimp_check() -> Response:
    """Answer Mailchimp's check of the webhook URL. Mailchimp calls it with GET when the
    webhook is saved, and saves it only on a 200."""
    return jsonify({"tool": "mailchimp"})


@bp.post("/hooks/newsletter/mailchimp")
@describe(tag="import", body=MAILCHIMP, params=(DOUBLE_OPT_IN,), security=SECURITY, replies=REPLIES)
def mailchimp(double_opt_in: str | None) -> tuple[Response, int]:
    """Take a Mailchimp audience webhook call (form-encoded ``type`` and ``data[…]``).
    ``unsubscribe`` and ``cleaned`` withdraw the address's ``email`` consent; ``subscribe``
    grants it; ``upemail`` withdraws the old address and grants the new one; a member
    deleted (``data[action]=delete``), ``profile`` and ``campaign`` are ignored."""
    form = MAILCHIMP.check(request.form.to_dict())
    return _take("mailchimp", read_mailchimp(form, _flag(double_opt_in)))


@bp.post("/hooks/newsletter/brevo")
@describe(tag="import", body=BREVO, security=SECURITY, replies=REPLIES)
def brevo() -> tuple[Response, int]:
    """Take a Brevo marketing webhook call (one JSON event). ``unsubscribed``, ``hardBounce``
    and ``spam`` withdraw the address's ``email`` consent; ``delivered`` of a campaign
    grants it (Brevo mails campaigns to subscribers only); ``opened`` and ``click`` are
    touchpoints; other events are ignored."""
    body = BREVO.check(read_body(request, current_deps().config.max_batch_bytes))
    return _take("brevo", read_brevo(body))


@bp.get("/hooks/newsletter/cleverreach")
@describe(
    tag="import",
    params=(
        Param("secret", Text(max_length=200, printable=True), required=True),
        Param(
            "verify",
            Text(min_length=10, max_length=50, printable=True),
            required=True,
            message="verify: add &verify=<the token given CleverReach> to the hook's URL",
        ),
    ),
    security=SECURITY,
    replies={
        200: Reply("The verify token, a space and the secret.", "text/plain", {"type": "string"}),
        400: BAD_PARAMETER,
        401: NO_KEY,
    },
)
def cleverreach_check(secret: str, verify: str) -> Response:
    """Answer CleverReach's verification of the hook's URL. CleverReach calls it with GET
    and ``?secret=`` while the hook is registered, and wants the verify token it was
    given, a space and the secret back."""
    return Response(f"{verify} {secret}", mimetype="text/plain")


@bp.post("/hooks/newsletter/cleverreach")
@describe(
    tag="import", body=CLEVERREACH, params=(DOUBLE_OPT_IN,), security=SECURITY, replies=REPLIES
)
def cleverreach(double_opt_in: str | None) -> tuple[Response, int]:
    """Take a CleverReach receiver event (JSON ``event`` and ``payload``).
    ``receiver.unsubscribed`` withdraws the address's ``email`` consent and
    ``receiver.subscribed`` grants it, for the address in ``payload.email``; other
    events, and events naming no address, are ignored."""
    body = CLEVERREACH.check(read_body(request, current_deps().config.max_batch_bytes))
    now = int(time.time() * 1000)
    return _take("cleverreach", read_cleverreach(body, _flag(double_opt_in), now))


def _flag(value: str | None) -> bool | None:
    """Return the double_opt_in parameter as a bool (None when not given)."""
    return None if value is None else value == "true"


def _take(tool: str, reading: Reading) -> tuple[Response, int]:
    """Store the hits of a call's events (all valid, or none: 400); return the counts."""
    hits, errors = [], []
    for i, event in enumerate(reading.events):
        digest = row_digest(_SOURCE, {**event.said, **event.key, **event.row})
        try:
            hits.append((digest, storable(newsletter_hit(event.row, digest, said=event.said))))
        except RowError as exc:
            errors.append({"index": i, "reason": str(exc)})
    if errors:
        detail = f"{len(errors)} of {len(reading.events)} events are invalid: {errors[0]['reason']}"
        raise Problem(400, "Invalid events", detail, "invalid-payload", {"errors": errors})
    deps = current_deps()
    r = deps.redis
    report = ImportReport(rows=len(hits))
    enqueue_new(r, _SOURCE, hits, report, partitions=deps.config.stream_partitions)
    if reading.ignored:
        metrics.incr(
            r, metrics.counter("dmp_newsletter_hook_ignored_total", tool=tool), reading.ignored
        )
        log.info("%s webhook: ignored %s", tool, ", ".join(reading.why))
    counts = {
        "accepted": report.new,
        "duplicates": report.already,
        "erased_before": report.erased,
        "ignored": reading.ignored,
    }
    return jsonify(counts), 200
