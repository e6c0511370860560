"""The webhook destination against a receiver that verifies what it gets, over a socket."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator

import pytest
import requests
from flask import Response

from dmp.membership.audience import Contact
from dmp.records import Category
from exporters.destination import Batch, Op, Refused, Row, Settings, Unavailable
from exporters.webhook import WebhookDestination
from tests.exporters.contracts.server import Seen
from tests.exporters.contracts.webhook import Receiver

SECRET = "whsec-0123456789abcdef-SECRET"
ADA = Contact("p1", email="ada@example.com", phones=("+4930123456",), first_name="Ada",
              company="Example GmbH", country="Deutschland")  # fmt: skip
BOB = Contact("p2", email="bob@example.com", last_name="Builder", job_title="CTO")


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """Return a webhook receiver on a real socket, its secret in HOOK_SECRET."""
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    hook = Receiver(SECRET.encode())
    with hook.server:
        yield hook


def settings(receiver: Receiver, **options: str) -> Settings:
    """Return the settings of a webhook destination for the segment "webinar"."""
    base = {"url": receiver.url, "secret_env": "HOOK_SECRET", "retry_base": "0.01"}
    return Settings("crm-hook", "webhook", ("webinar",), options=base | options)


def batch(op: Op, rows: list[Row], number: int = 1, last: bool = True) -> Batch:
    """Return a batch of the sync session "s1"."""
    return Batch(op, "webinar", "", rows, number, last, "s1", len(rows))


def resend(receiver: Receiver, seen: Seen, body: bytes | None = None) -> requests.Response:
    """POST a request the receiver saw again, with its headers (and maybe another body)."""
    headers = {k: seen.headers[k] for k in ("X-Dmp-Signature", "X-Dmp-Delivery", "Content-Type")}
    return requests.post(receiver.url, data=seen.body if body is None else body, headers=headers)


def test_batches_are_signed_and_applied(receiver: Receiver) -> None:
    """An add is one POST with the documented body, a signature the receiver verifies and
    the delivery id <session>-<op>-<batch>; rows hold only what each contact holds."""
    destination = WebhookDestination(settings(receiver))
    destination.send(batch(Op.ADD, destination.encode([ADA, BOB])))
    [seen] = receiver.server.requests_to("POST", "/hooks/dmp")
    assert seen.headers["X-Dmp-Delivery"] == "s1-add-1"
    t, v1 = (part.split("=", 1)[1] for part in seen.headers["X-Dmp-Signature"].split(","))
    expected = hmac.new(SECRET.encode(), f"{t}.".encode() + seen.body, hashlib.sha256)
    assert v1 == expected.hexdigest() and abs(time.time() - int(t)) < 5
    body = seen.json()
    assert {k: body[k] for k in ("destination", "segment", "op", "batch", "last")} == {
        "destination": "crm-hook", "segment": "webinar", "op": "add", "batch": 1, "last": True
    }  # fmt: skip
    assert receiver.rows("webinar")["p1"] == {
        "person_id": "p1",
        "email": "ada@example.com",
        "email_sha256": hashlib.sha256(b"ada@example.com").hexdigest(),
        "phones": ["+4930123456"],
        "first_name": "Ada",
        "company": "Example GmbH",
        "country": "de",
    }
    assert set(receiver.rows("webinar")["p2"]) == {
        "person_id", "email", "email_sha256", "last_name", "job_title"
    }  # fmt: skip


def test_remove_and_replace_reach_the_receiver(receiver: Receiver) -> None:
    """A remove takes rows out; a replace session's batches swap the whole segment in
    once its last batch arrived."""
    destination = WebhookDestination(settings(receiver))
    ada, bob = destination.encode([ADA, BOB])
    assert ada is not None and bob is not None
    destination.send(batch(Op.ADD, [ada, bob]))
    destination.send(batch(Op.REMOVE, [ada]))
    assert set(receiver.rows("webinar")) == {"p2"}
    destination.send(batch(Op.REPLACE, [ada], number=1, last=False))
    assert set(receiver.rows("webinar")) == {"p2"}
    destination.send(batch(Op.REPLACE, [("p3", "c@x.de", "", "", "", "", "", "", "")], 2))
    assert set(receiver.rows("webinar")) == {"p1", "p3"}


def test_tampered_body_or_old_timestamp_is_rejected(receiver: Receiver) -> None:
    """The receiver turns away a body changed after signing and a request signed more
    than five minutes ago."""
    destination = WebhookDestination(settings(receiver))
    destination.send(batch(Op.ADD, destination.encode([ADA])))
    [seen] = receiver.server.seen
    tampered = seen.body.replace(b"ada@example.com", b"eve@example.com")
    assert resend(receiver, seen, tampered).status_code == 401
    old = int(time.time()) - 600
    digest = hmac.new(SECRET.encode(), f"{old}.".encode() + seen.body, hashlib.sha256)
    headers = {
        "X-DMP-Signature": f"t={old},v1={digest.hexdigest()}",
        "X-DMP-Delivery": "s1-add-9",
        "Content-Type": "application/json",
    }
    assert requests.post(receiver.url, data=seen.body, headers=headers).status_code == 401
    assert receiver.rejected == ["signature mismatch", "timestamp outside the tolerance"]
    assert receiver.applied == ["s1-add-1"]


def test_replayed_delivery_is_not_applied_twice(receiver: Receiver) -> None:
    """A captured request sent again inside the window is acknowledged but changes
    nothing: the delivery id was applied once."""
    destination = WebhookDestination(settings(receiver))
    destination.send(batch(Op.ADD, destination.encode([ADA])))
    destination.send(batch(Op.REMOVE, destination.encode([ADA])))
    add = receiver.server.seen[0]
    assert resend(receiver, add).status_code == 200
    assert receiver.duplicates == ["s1-add-1"] and receiver.rows("webinar") == {}


def test_throttling_timeouts_and_server_errors_are_retried(receiver: Receiver) -> None:
    """429, 408 and 5xx are retried with the same delivery id, each attempt signed; the
    batch is applied once. Past the last attempt the receiver is unavailable."""
    receiver.server.inject(
        lambda: Response("slow down", 429, {"Retry-After": "0"}),
        lambda: Response("timeout", 408),
        lambda: Response("oops", 500),
        lambda: Response("not yet", 501),
    )
    destination = WebhookDestination(settings(receiver))
    destination.send(batch(Op.ADD, destination.encode([ADA])))
    attempts = receiver.server.seen
    assert len(attempts) == 5
    assert {s.headers["X-Dmp-Delivery"] for s in attempts} == {"s1-add-1"}
    assert all(s.headers["X-Dmp-Signature"].startswith("t=") for s in attempts)
    assert receiver.applied == ["s1-add-1"]
    receiver.server.inject(*(lambda: Response("down", 503) for _ in range(3)))
    with pytest.raises(Unavailable):
        WebhookDestination(settings(receiver, retry_attempts="3")).send(
            batch(Op.REMOVE, destination.encode([ADA]))
        )


def test_receiver_refusal_stops_with_its_status(receiver: Receiver) -> None:
    """A 4xx other than 408 and 429 (or a redirect) refuses the batch with the
    receiver's status, and is not retried."""
    receiver.server.inject(lambda: Response('{"error": "unknown segment"}', 422))
    destination = WebhookDestination(settings(receiver))
    with pytest.raises(Refused, match="422"):
        destination.send(batch(Op.ADD, destination.encode([ADA])))
    receiver.server.inject(lambda: Response("", 307, {"Location": "http://example.invalid/"}))
    with pytest.raises(Refused, match="307"):
        destination.send(batch(Op.ADD, destination.encode([ADA])))
    assert len(receiver.server.seen) == 2 and receiver.applied == []


def test_wrong_secret_is_refused_and_no_secret_is_logged(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A destination signing with another secret is turned away (401: refused); the
    secret appears in no error, repr or log line, retries included."""
    wrong = "whsec-wrong-DO-NOT-LOG"
    monkeypatch.setenv("HOOK_SECRET", wrong)
    caplog.set_level(logging.DEBUG)
    receiver.server.inject(lambda: Response("busy", 503))
    destination = WebhookDestination(settings(receiver))
    with pytest.raises(Refused) as refused:
        destination.send(batch(Op.ADD, destination.encode([ADA])))
    assert "401" in str(refused.value) and receiver.rejected == ["signature mismatch"]
    texts = (str(refused.value), repr(destination), repr(destination.signature), caplog.text)
    assert "retry 1" in caplog.text
    for text in texts:
        assert wrong not in text and SECRET not in text
    assert all(wrong.encode() not in s.body + json.dumps(s.headers).encode()
               for s in receiver.server.seen)  # fmt: skip


def test_channel_and_batch_size_come_from_the_options(receiver: Receiver) -> None:
    """The class says ads and 500 rows; an instance takes its options' channel and
    batch size."""
    assert (WebhookDestination.channel, WebhookDestination.batch_size) == (Category.ADS, 500)
    default = WebhookDestination(settings(receiver))
    assert (default.channel, default.batch_size) == (Category.ADS, 500)
    email = WebhookDestination(settings(receiver, channel="email", batch_size="10000"))
    assert (email.channel, email.batch_size) == (Category.EMAIL, 10_000)


def test_check_lists_missing_and_wrong_options() -> None:
    """check() names a missing url or secret, a url that is not http(s), an unknown
    channel and a batch size out of range; the constructor refuses such settings."""
    empty = Settings("h", "webhook", ("webinar",))
    assert len(WebhookDestination.check(empty)) == 2
    bad = {"url": "ftp://x", "secret_env": "S", "channel": "analytics", "batch_size": "20000"}
    problems = WebhookDestination.check(Settings("h", "webhook", ("webinar",), options=bad))
    for named in ("url", "channel", "batch_size"):
        assert any(f"option {named}" in p for p in problems)
    assert len(problems) == 3
    with pytest.raises(Refused):
        WebhookDestination(Settings("h", "webhook", ("webinar",), options=bad))
    good = {"url": "https://hooks.example.com/dmp", "secret_env": "S", "batch_size": "1"}
    assert WebhookDestination.check(Settings("h", "webhook", ("w",), options=good)) == []


def test_test_sends_a_signed_ping(receiver: Receiver) -> None:
    """test() POSTs a signed {"op": "test"} that the receiver verifies."""
    said = WebhookDestination(settings(receiver)).test()
    assert receiver.pings == 1 and receiver.rejected == []
    assert "127.0.0.1" in said
