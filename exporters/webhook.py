"""Webhook: each batch is a signed JSON POST to a URL of the operator's own.

The body::

    {"destination": "crm-sync", "segment": "webinar", "op": "add", "batch": 1,
     "last": true, "session": "1718000000000-9f3a1c2b", "total": 2,
     "rows": [{"person_id": "p_…", "email": "ada@example.com", "email_sha256": "…",
               "phones": ["+4930123456"], "first_name": "Ada", "country": "de"}]}

A row holds only what the contact holds (empty fields are left out) and only
identifiers carrying the consent of the destination's ``channel``. ``op`` says what to
do with the rows: ``add`` (insert or update, keyed by ``person_id``), ``remove`` (the
rows as they were added) or ``replace`` (a full refresh: the batches ``1…n`` of one
``session``; once the batch with ``last: true`` arrived, the segment holds exactly that
session's rows).

Headers:

- ``X-DMP-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">``, keyed
  with the secret in the environment variable ``secret_env`` names; every attempt is
  signed afresh, so a retry carries a new ``t``;
- ``X-DMP-Delivery: <session>-<op>-<batch>``: the same on every retry of a batch, an
  idempotency key.

A receiver should verify the signature over the raw bytes, refuse a ``t`` more than
5 minutes from its clock (a captured request replayed later) and apply a delivery id
once (a retry whose answer got lost is acknowledged again, not applied twice)::

    import hashlib, hmac, time

    def verified(secret: bytes, header: str, body: bytes, tolerance: int = 300) -> bool:
        fields = dict(part.split("=", 1) for part in header.split(","))
        t = int(fields["t"])
        if abs(time.time() - t) > tolerance:
            return False
        expected = hmac.new(secret, b"%d." % t + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, fields["v1"])

Answers: 2xx acknowledges the batch. 408, 429 and 5xx are retried with backoff
(``Retry-After`` honoured); redirects are not followed; any other answer refuses the
batch and stops the sync with the receiver's status.

Options: ``url`` (http or https), ``secret_env``, ``channel`` (``ads``, the default, or
``email``: the consent the receiver's use needs), ``batch_size`` (rows a POST, default
500, at most 10,000), and the retry options of ``exporters.http``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.auth import AuthBase

from dmp.membership.audience import Contact
from dmp.records import Category
from exporters import identifiers
from exporters.destination import Batch, Outcome, Refused, Row, Settings
from exporters.http import RETRIED, Http, excerpt, retry_after

BATCH_SIZE = 500
MAX_BATCH_SIZE = 10_000
CHANNELS = {"ads": Category.ADS, "email": Category.EMAIL}
TOLERANCE = 300  # seconds a receiver should accept between t and its clock


class Signature(AuthBase):
    """Signs every attempt of a request with its own timestamp (the secret stays here)."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        body = r.body if isinstance(r.body, bytes) else (r.body or "").encode()
        r.headers["X-DMP-Signature"] = sign(self._secret, body, int(time.time()))
        return r

    def __repr__(self) -> str:
        return "Signature(<secret hidden>)"


def sign(secret: bytes, body: bytes, t: int) -> str:
    """Return the ``X-DMP-Signature`` value of a body signed at Unix time ``t``."""
    digest = hmac.new(secret, b"%d." % t + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


class WebhookDestination:
    """POSTs each batch, signed, to a URL of the operator's own."""

    channel = Category.ADS  # the default; an instance takes its option's
    columns = (
        "person_id",
        "email",
        "email_sha256",
        "phones",
        "first_name",
        "last_name",
        "company",
        "job_title",
        "country",
    )
    key = 0
    batch_size = BATCH_SIZE  # the default; an instance takes its option's
    replaces = True

    def __init__(self, settings: Settings) -> None:
        if problems := self.check(settings):
            raise Refused(f"{settings.name}: {'; '.join(problems)}")
        self.settings = settings
        self.url = settings.option("url")
        self.channel = CHANNELS[settings.option("channel", "ads")]
        self.batch_size = int(settings.option("batch_size", str(BATCH_SIZE)))
        self.signature = Signature(settings.secret("secret_env").encode())
        self.pause = float(settings.option("retry_base", "1.0"))
        self.http = Http(settings, self.url, {"Accept": "application/json"}, throttled=self._retry)

    @staticmethod
    def check(settings: Settings) -> list[str]:
        """Return what is missing or wrong in the settings, one line each."""
        problems = []
        url = urlsplit(settings.option("url"))
        if not settings.option("url"):
            problems.append("option url (where batches are POSTed) is not set")
        elif url.scheme not in ("http", "https") or not url.netloc:
            problems.append("option url: not an http(s) URL")
        if not settings.option("secret_env"):
            problems.append(
                "option secret_env (the variable holding the signing secret) is not set"
            )
        if settings.option("channel", "ads") not in CHANNELS:
            problems.append("option channel: ads or email")
        size = settings.option("batch_size", str(BATCH_SIZE))
        if not size.isdigit() or not 1 <= int(size) <= MAX_BATCH_SIZE:
            problems.append(f"option batch_size: a whole number from 1 to {MAX_BATCH_SIZE}")
        return problems

    def encode(self, contacts: Sequence[Contact]) -> list[Row | None]:
        """Return each contact's row: dmp's person id and what the contact holds."""
        return [
            (
                c.person_id,
                c.email,
                identifiers.sha256_hex(identifiers.meta_email(c.email)) if c.email else "",
                ",".join(c.phones),
                c.first_name,
                c.last_name,
                c.company,
                c.job_title,
                identifiers.country_code(c.country),
            )
            for c in contacts
        ]

    def send(self, batch: Batch) -> Outcome:
        """POST one batch; 2xx acknowledges all of its rows."""
        body = {
            "destination": self.settings.name,
            "segment": batch.segment_id,
            "op": batch.op.value,
            "batch": batch.number,
            "last": batch.last,
            "session": batch.session,
            "total": batch.total,
            "rows": [record(row) for row in batch.rows],
        }
        self._post(body, f"{batch.session}-{batch.op.value}-{batch.number}")
        return Outcome()

    def test(self) -> str:
        """POST a signed ``{"op": "test"}``; return what the receiver answered."""
        body = {"destination": self.settings.name, "op": "test"}
        status = self._post(body, f"test-{secrets.token_hex(8)}")
        return f"webhook {urlsplit(self.url).netloc} acknowledged a signed test ({status})"

    def _post(self, body: dict[str, Any], delivery: str) -> int:
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", "X-DMP-Delivery": delivery}
        answer = self.http.request(
            "POST", self.url, data=data, headers=headers, auth=self.signature, allow_redirects=False
        )
        if not 200 <= answer.status_code < 300:
            raise Refused(
                f"{self.settings.name}: the receiver answered {answer.status_code} "
                f"{excerpt(answer.text, 120)}"
            )
        return answer.status_code

    def _retry(self, answer: requests.Response) -> float | None:
        """Return a wait for the answers ``exporters.http`` would not retry itself: 408
        and the 5xx outside its set."""
        if answer.status_code == 408 or (
            answer.status_code >= 500 and answer.status_code not in RETRIED
        ):
            return retry_after(answer) or self.pause
        return None


def record(row: Row) -> dict[str, Any]:
    """Return a row as the JSON object a receiver gets (empty fields left out)."""
    out: dict[str, Any] = {}
    for column, value in zip(WebhookDestination.columns, row, strict=True):
        if value:
            out[column] = value.split(",") if column == "phones" else value
    return out
