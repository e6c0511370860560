"""LinkedIn Matched Audiences: hashed-email rows streamed into a DMP segment, against the
API's contract server over a real socket."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from dmp.membership.audience import Contact
from exporters.destination import Batch, Op, Refused, Row, Settings, Unavailable
from exporters.linkedin import LinkedInAudience
from tests.exporters.contracts.linkedin import (
    SEGMENT,
    TOKEN,
    DmpApi,
    DmpSegment,
    throttled,
    unavailable,
)
from tests.exporters.contracts.server import ContractServer


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINKEDIN_TOKEN", TOKEN)


@pytest.fixture
def api() -> Iterator[tuple[DmpApi, ContractServer]]:
    linkedin = DmpApi()
    with ContractServer(linkedin.app) as server:
        yield linkedin, server


def settings(url: str = "", segments: tuple[str, ...] = ("leads",), **extra: str) -> Settings:
    options = {
        "token_env": "LINKEDIN_TOKEN",
        "audience.leads": SEGMENT,
        "base_url": url,
        "retry_base": "0.01",
        "retry_attempts": "4",
        **extra,
    }
    return Settings("linkedin", "linkedin", segments, options=options)


def batch(rows: list[Row], op: Op = Op.ADD, number: int = 1) -> Batch:
    return Batch(op, "leads", SEGMENT, rows, number, True, "s1", len(rows))


def rows_for(*emails: str) -> list[Row]:
    return [(sha(e),) for e in emails]


def test_rows_are_hashed_trimmed_lowercase_emails() -> None:
    """A row is the SHA-256 of the trimmed, lowercased email; no email, no row."""
    dest = LinkedInAudience(settings())
    contacts = [Contact("a", email=" Jane.Doe@Example.com "), Contact("b", phones=("+4930123",))]
    assert dest.encode(contacts) == [(sha("jane.doe@example.com"),), None]


def test_add_and_remove_with_the_documented_headers(
    api: tuple[DmpApi, ContractServer],
) -> None:
    """ADD and REMOVE go as one BATCH_CREATE each, with the version, protocol and method
    headers and the Bearer token; the segment holds exactly what was added."""
    linkedin, server = api
    dest = LinkedInAudience(settings(server.url))
    rows = rows_for("a@example.com", "b@example.com", "c@example.com")
    assert dest.send(batch(rows)).failed == {}
    assert linkedin.members() == {r[0] for r in rows}
    assert dest.send(batch(rows[:2], Op.REMOVE)).failed == {}
    assert linkedin.members() == {rows[2][0]}
    first, second = server.requests_to("POST", f"/rest/dmpSegments/{SEGMENT}/users")
    assert first.headers["Authorization"] == f"Bearer {TOKEN}"
    assert first.headers["X-Restli-Protocol-Version"] == "2.0.0"
    assert first.headers["X-Restli-Method"] == "BATCH_CREATE"
    assert len(first.headers["Linkedin-Version"]) == 6
    element = second.json()["elements"][0]
    assert element == {
        "action": "REMOVE",
        "userIds": [{"idType": "SHA256_EMAIL", "idValue": rows[0][0]}],
    }


def test_refused_elements_are_failed_alone(api: tuple[DmpApi, ContractServer]) -> None:
    """An element LinkedIn refuses is reported by index; the others are taken."""
    linkedin, server = api
    rows = [rows_for("a@example.com")[0], ("NOT-A-HASH",), rows_for("b@example.com")[0]]
    outcome = LinkedInAudience(settings(server.url)).send(batch(rows))
    assert list(outcome.failed) == [1] and outcome.failed[1].startswith("400")
    assert linkedin.members() == {rows[0][0], rows[2][0]}


def test_throttling_and_outages_are_retried(api: tuple[DmpApi, ContractServer]) -> None:
    """A 429 or a 503 is retried and the batch then sent."""
    linkedin, server = api
    server.inject(throttled(), unavailable())
    assert (
        LinkedInAudience(settings(server.url)).send(batch(rows_for("a@example.com"))).failed == {}
    )
    assert len(server.requests_to("POST", "/users")) == 3
    assert linkedin.members() == {sha("a@example.com")}


def test_endless_throttling_is_unavailable(api: tuple[DmpApi, ContractServer]) -> None:
    """Throttled past the last attempt, a send raises Unavailable."""
    linkedin, server = api
    server.inject(*[throttled()] * 10)
    dest = LinkedInAudience(settings(server.url, retry_attempts="2"))
    with pytest.raises(Unavailable, match="429"):
        dest.send(batch(rows_for("a@example.com")))
    assert linkedin.members() == set()


def test_requests_are_paced_to_the_rate_limit(api: tuple[DmpApi, ContractServer]) -> None:
    """Requests to /users are spaced by a minute over LinkedIn's 600 (no throttling met)."""
    linkedin, server = api
    dest = LinkedInAudience(settings(server.url))
    for number in range(1, 4):
        dest.send(batch(rows_for(f"{number}@example.com"), number=number))
    gaps = [b - a for a, b in zip(linkedin.arrivals, linkedin.arrivals[1:], strict=False)]
    assert len(gaps) == 2 and min(gaps) >= 0.08  # 60 s / 600, less arrival jitter


def test_server_limit_is_met_with_429() -> None:
    """The contract server throttles past its per-minute limit (what pacing avoids)."""
    linkedin = DmpApi(per_minute=1)
    with ContractServer(linkedin.app) as server:
        dest = LinkedInAudience(settings(server.url, retry_attempts="1"))
        dest.send(batch(rows_for("a@example.com")))
        with pytest.raises(Unavailable, match="TOO_MANY_REQUESTS"):
            dest.send(batch(rows_for("b@example.com"), number=2))


def test_batch_size_is_the_per_request_maximum(api: tuple[DmpApi, ContractServer]) -> None:
    """batch_size elements go in one request; one more is refused whole."""
    linkedin, server = api
    dest = LinkedInAudience(settings(server.url))
    rows = [(sha(f"{i}@example.com"),) for i in range(dest.batch_size + 1)]
    assert dest.send(batch(rows[:-1])).failed == {}
    with pytest.raises(Refused, match="INVALID_BATCH_SIZE"):
        dest.send(batch(rows))
    assert len(linkedin.members()) == dest.batch_size


def test_bad_token_is_refused_without_the_token(
    api: tuple[DmpApi, ContractServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token LinkedIn does not take refuses the send; the error never shows it."""
    _, server = api
    monkeypatch.setenv("LINKEDIN_TOKEN", "AQX-revoked-secret")
    with pytest.raises(Refused) as refused:
        LinkedInAudience(settings(server.url)).send(batch(rows_for("a@example.com")))
    assert "401" in str(refused.value) and "revoked-secret" not in str(refused.value)


def test_version_not_served_is_refused(api: tuple[DmpApi, ContractServer]) -> None:
    """An api_version LinkedIn does not serve is refused (426), not retried."""
    _, server = api
    dest = LinkedInAudience(settings(server.url, api_version="202001"))
    with pytest.raises(Refused, match="NONEXISTENT_VERSION"):
        dest.send(batch(rows_for("a@example.com")))
    assert len(server.requests_to("POST", "/users")) == 1


def test_unknown_segment_is_refused(api: tuple[DmpApi, ContractServer]) -> None:
    """A DMP segment id LinkedIn does not know refuses the send."""
    _, server = api
    dest = LinkedInAudience(settings(server.url))
    with pytest.raises(Refused, match="404"):
        dest.send(Batch(Op.ADD, "leads", "999", rows_for("a@example.com"), 1, True, "s", 1))


def test_test_reads_each_segment_and_names_the_minimum(
    api: tuple[DmpApi, ContractServer],
) -> None:
    """test() reads every configured segment and says when its audience is under 300."""
    linkedin, server = api
    linkedin.segments["20000"] = DmpSegment("big", members={sha(f"{i}@x.com") for i in range(300)})
    dest = LinkedInAudience(settings(server.url, ("leads", "mqls"), **{"audience.mqls": "20000"}))
    said = dest.test().split("; ")
    assert said[0].startswith("leads:") and "audience 0" in said[0] and "300-member" in said[0]
    assert said[1].startswith("mqls:") and "audience 300" in said[1] and "minimum" not in said[1]
    assert len(server.requests_to("GET", f"/rest/dmpSegments/{SEGMENT}")) == 1


def test_company_segment_is_refused(api: tuple[DmpApi, ContractServer]) -> None:
    """test() refuses a company segment: dmp streams users."""
    linkedin, server = api
    linkedin.segments[SEGMENT].type = "COMPANY"
    with pytest.raises(Refused, match="COMPANY"):
        LinkedInAudience(settings(server.url)).test()


def test_check_lists_missing_options() -> None:
    """check() names the token option, a malformed version and each segment without a
    DMP segment id."""
    bare = Settings(
        "li",
        "linkedin",
        ("leads", "mqls"),
        options={"audience.leads": "1", "api_version": "2026-04"},
    )
    problems = LinkedInAudience.check(bare)
    assert any("token_env" in p for p in problems)
    assert any("api_version" in p for p in problems)
    assert any("audience.mqls" in p for p in problems)
    assert not any("audience.leads" in p for p in problems)
    assert LinkedInAudience.check(settings()) == []
