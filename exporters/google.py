"""Google Customer Match through the Data Manager API (kind ``google``), or as the upload
files Google Ads takes (option ``csv_dir``).

Checked against the ``google/ads/datamanager/v1`` protos and the REST, formatting and
error guides: ``POST https://datamanager.googleapis.com/v1/audienceMembers:ingest`` and
``:remove`` (JSON, OAuth2 Bearer, scope ``auth/datamanager``); ``destinations`` name the
``operatingAccount{accountType, accountId}``, an optional ``loginAccount`` (a manager's
credentials) and the user list (``productDestinationId``); at most 10,000
``audienceMembers`` a request, each ``userData`` with at most 10 ``userIdentifiers``
(``emailAddress``, ``phoneNumber``: SHA-256 hex; ``address{givenName, familyName,
regionCode, postalCode}``: names hashed, region and postal code plain); ``encoding:
HEX``. An ingest carries each member's ``consent`` (``adUserData`` and
``adPersonalization`` granted: dmp sends only identifiers holding ``ads`` consent) and
``termsOfService.customerMatchTermsOfServiceStatus: ACCEPTED`` (required for Customer
Match: configuring this destination is the account holder's acceptance); a remove has
neither. ``validateOnly`` executes nothing (``test()`` uses it). The whole request is
validated: one malformed member fails it with 400 ``INVALID_ARGUMENT`` and a
``google.rpc.BadRequest`` whose ``fieldViolations`` name it
(``audience_members.audience_members[3]…``): dmp fails those members and sends the rest
again. Later processing is asynchronous (``requestStatus:retrieve``), not read back.
Throttling is ``RESOURCE_EXHAUSTED`` (429); its ``RetryInfo`` is honoured.

Not verified: whether lowercase region codes are taken (dmp sends ISO's uppercase), and
Gmail's ``+suffix`` rule (the formatting guide names dots only; ``exporters.identifiers``
follows CONTRACTS.md and drops both).

Upload CSV (Google Ads help "Format your customer data file" and its template): UTF-8,
headers ``Email, Phone, First Name, Last Name, Country, Zip`` also for hashed values,
more ``Phone`` columns allowed; an address match needs names, country and zip.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import requests

from dmp.membership.audience import Contact
from dmp.records import Category
from dmp.storage.parquetfiles import accepts_writes, sync_dir, tmp_name, write_text
from exporters.destination import Batch, Op, Outcome, Refused, Row, Settings, Unavailable
from exporters.googlerows import csv_text, encode_rows, members_json
from exporters.http import Http, excerpt
from exporters.identifiers import sha256_hex

API = "https://datamanager.googleapis.com"
INGEST = "/v1/audienceMembers:ingest"
REMOVE = "/v1/audienceMembers:remove"
ACCOUNT_TYPES = ("GOOGLE_ADS", "DISPLAY_VIDEO_PARTNER", "DISPLAY_VIDEO_ADVERTISER", "DATA_PARTNER")
PROBE = sha256_hex("dmp-connection-test@example.com")  # test()'s member: validated only
# A member's JSON is written from templates: hex digests need no escaping, and building
# and dumping a dict per member costs several times its hashing.
_MEMBER_ID = re.compile(r"audience_members\[(\d+)\]")
_NOT_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


class GoogleCustomerMatch:
    """A Customer Match user list per segment, through the Data Manager API."""

    channel: ClassVar[Category] = Category.ADS
    columns: ClassVar[tuple[str, ...]] = (
        "email_sha256",
        "phone_sha256s",  # space-separated
        "given_name_sha256",
        "family_name_sha256",
        "region_code",
        "postal_code",
    )
    key: ClassVar[int | None] = None
    batch_size: ClassVar[int] = 10_000
    replaces: ClassVar[bool] = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.csv_dir = settings.option("csv_dir")
        if self.csv_dir:
            return
        token = settings.secret("token_env")
        self.http = Http(settings, API, {"Authorization": f"Bearer {token}"}, throttled=retry_delay)
        self.destination: dict[str, Any] = {}
        for role in ("operating", "login"):  # login: the account whose user the token is
            if role == "operating" or settings.option("login_account_id"):
                kind = settings.option(f"{role}_account_type", "GOOGLE_ADS")
                number = settings.option(f"{role}_account_id").replace("-", "")
                self.destination[f"{role}Account"] = {"accountType": kind, "accountId": number}

    @staticmethod
    def check(settings: Settings) -> list[str]:
        """Return what is wrong with the settings, one line each."""
        if settings.option("csv_dir"):
            return []
        problems = settings.needs("token_env", "audience", "the Customer Match user list id")
        for role in ("operating", "login"):
            number = settings.option(f"{role}_account_id").replace("-", "")
            if (number or role == "operating") and not number.isdigit():
                problems.append(f"{role}_account_id must be the account's number")
            kind = settings.option(f"{role}_account_type", "GOOGLE_ADS")
            if kind not in ACCOUNT_TYPES:
                problems.append(f"{role}_account_type must be one of {', '.join(ACCOUNT_TYPES)}")
        return problems

    def encode(self, contacts: Sequence[Contact]) -> list[Row | None]:
        """Return each contact's row: hashed email, phones and names, plain region and
        postal code (None: nothing Google can match on)."""
        return encode_rows(contacts)

    def send(self, batch: Batch) -> Outcome:
        """Send one batch (or write it as an upload file); return the members refused."""
        if batch.op is Op.REPLACE:
            raise Refused(f"{self.settings.name}: Customer Match takes no replace here")
        if self.csv_dir:
            self.write_csv(batch)
            return Outcome()
        target = batch.target or self.settings.target(batch.segment_id, "audience")
        if not target:
            raise Refused(f"{self.settings.name}: audience.{batch.segment_id} is not set")
        return self._post(batch.op, target, batch.rows)

    def test(self) -> str:
        """Validate an upload to each segment's user list (validateOnly: nothing changes);
        with ``csv_dir``, check the folder takes files."""
        if self.csv_dir:
            with contextlib.suppress(OSError):
                Path(self.csv_dir).mkdir(parents=True, exist_ok=True)
            if not accepts_writes(Path(self.csv_dir)):
                raise Refused(f"{self.settings.name}: cannot write files in {self.csv_dir}")
            return f"{self.csv_dir} takes files: Customer Match upload CSVs go there"
        lists = []
        for segment in self.settings.segments:
            target = self.settings.target(segment, "audience")
            body = self.body([(PROBE, "", "", "", "", "")], target, ingest=True, validate=True)
            error = self._call(INGEST, body)
            if error is not None:
                raise Refused(f"{self.settings.name}: user list {target}: {_message(error)}")
            lists.append(f"{target} ({segment})")
        account = " ".join(self.destination["operatingAccount"].values())
        return f"{account} takes uploads to user lists {', '.join(lists)} (validateOnly)"

    def body(
        self, rows: Sequence[Row], target: str, *, ingest: bool, validate: bool = False
    ) -> bytes:
        """Return the JSON body of an ingest (or remove) request for ``rows``."""
        envelope: dict[str, Any] = {
            "destinations": [{**self.destination, "productDestinationId": target}],
            "encoding": "HEX",
        }
        if ingest:
            envelope["termsOfService"] = {"customerMatchTermsOfServiceStatus": "ACCEPTED"}
        if validate:
            envelope["validateOnly"] = True
        head = json.dumps(envelope, separators=(",", ":"))[:-1] + ',"audienceMembers":'
        return members_json(rows, ingest, head, "}").encode()

    def write_csv(self, batch: Batch) -> Path:
        """Write a batch as an upload file, whole or not at all; return its path."""
        folder = Path(self.csv_dir)
        parts = (_NOT_SAFE.sub("_", batch.segment_id), _NOT_SAFE.sub("_", batch.session))
        path = folder / f"{parts[0]}-{parts[1]}-{batch.op.value}-{batch.number:05d}.csv"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write_text(path, csv_text(batch.rows))
            sync_dir(folder)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp_name(path).unlink(missing_ok=True)
            raise Unavailable(f"{self.settings.name}: cannot write {path}: {exc}") from None
        return path

    def _post(self, op: Op, target: str, rows: Sequence[Row]) -> Outcome:
        """Send rows; members the API names as malformed are failed and the rest re-sent."""
        path = INGEST if op is Op.ADD else REMOVE
        failed: dict[int, str] = {}
        left = list(range(len(rows)))
        for _ in range(2):  # once more at most: the second request holds no named member
            body = self.body([rows[i] for i in left], target, ingest=op is Op.ADD)
            error = self._call(path, body)
            if error is None:
                return Outcome(failed)
            named, other = violations(error, len(left))
            if other or not named:
                raise Refused(f"{self.settings.name}: POST {path}: {_message(error, other)}")
            failed.update({left[at]: reason for at, reason in named.items()})
            left = [i for at, i in enumerate(left) if at not in named]
            if not left:
                return Outcome(failed)
        raise Refused(f"{self.settings.name}: POST {path}: members refused twice")

    def _call(self, path: str, body: bytes) -> dict[str, Any] | None:
        """Post a body; return None when accepted, the error of an INVALID_ARGUMENT."""
        headers = {"Content-Type": "application/json"}
        response = self.http.request("POST", path, data=body, headers=headers)
        if response.ok:
            return None
        error = _error(response)
        if response.status_code == 400 and error.get("status") == "INVALID_ARGUMENT":
            return error
        raise Refused(
            f"{self.settings.name}: POST {path}: {response.status_code} {_message(error)}"
        )


def violations(error: dict[str, Any], members: int) -> tuple[dict[int, str], list[str]]:
    """Return a BadRequest's violations by member position, and those naming no member."""
    named: dict[int, str] = {}
    other: list[str] = []
    for detail in error.get("details") or []:
        for violation in detail.get("fieldViolations") or []:
            field = str(violation.get("field", ""))
            reason = " ".join(
                str(violation[k]) for k in ("reason", "description") if violation.get(k)
            )
            found = _MEMBER_ID.search(field)
            if found and int(found.group(1)) < members:
                named.setdefault(int(found.group(1)), reason or "invalid member")
            else:
                other.append(f"{field}: {reason}")
    return named, other


def retry_delay(response: requests.Response) -> float | None:
    """Return the wait a RESOURCE_EXHAUSTED answer's RetryInfo asks for (None: unsaid)."""
    if response.status_code != 429:
        return None
    for detail in _error(response).get("details") or []:
        delay = str(detail.get("retryDelay", "")) if isinstance(detail, dict) else ""
        if delay.endswith("s"):
            with contextlib.suppress(ValueError):
                return float(delay[:-1])
    return None


def _error(response: requests.Response) -> dict[str, Any]:
    """Return the google.rpc.Status of an error answer ({} when it is not one)."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return {"message": excerpt(response.text)}
    return error if isinstance(error, dict) else {}


def _message(error: dict[str, Any], other: Sequence[str] = ()) -> str:
    """Return an error's status and message, and up to three violations."""
    text = f"{error.get('status', '')} {error.get('message', '')}".strip()
    return "; ".join([text or "refused", *other[:3]])
