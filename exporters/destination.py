"""What every destination is: one small Protocol, and the records the sync engine and a
destination exchange.

A destination turns audience members (``dmp.membership.audience.Contact``) into *rows*:
tuples of strings in its own ``columns``, normalised and hashed as its platform
documents. The sync engine (``exporters.sync``) keeps the rows a destination
acknowledged (what it *holds*), works out what it *should* hold, and hands the
difference over in :class:`Batch` es of at most ``batch_size`` rows; the destination
sends each, and says in an :class:`Outcome` which rows the platform refused.

Errors a destination raises:

- :class:`Unavailable`: the platform is down, or stayed throttled past every retry
  (``exporters.http`` retries 429, 5xx and each platform's own throttle signal with
  backoff first); the sync stops and resumes on the destination's next schedule;
- :class:`Refused`: the platform refused the whole request for a reason a retry will not
  cure (credentials, an unknown audience, a malformed request); the sync stops and says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar, Protocol, runtime_checkable

from dmp.membership.audience import Contact
from dmp.records import Category

Row = tuple[str, ...]


class Op(str, Enum):
    """What a batch asks of the platform."""

    ADD = "add"  # add (or update) these rows
    REMOVE = "remove"  # remove these rows (as they were added)
    REPLACE = "replace"  # a full refresh: these rows, in numbered batches, are all it holds


@dataclass(frozen=True, slots=True)
class Settings:
    """A destination as configured (never a secret: options name environment variables)."""

    name: str
    kind: str
    segments: tuple[str, ...]
    every_seconds: int = 900
    options: Mapping[str, str] = field(default_factory=dict)

    def option(self, name: str, default: str = "") -> str:
        """Return an option's value (``default`` when not set)."""
        return self.options.get(name, default)

    def secret(self, name: str) -> str:
        """Return the secret in the environment variable the option ``name`` names
        (``token_env=META_TOKEN``); MissingSecret says which is missing."""
        variable = self.options.get(name, "")
        if not variable:
            raise MissingSecret(f"{self.name}: option {name} (an environment variable) is not set")
        value = os.environ.get(variable, "")
        if not value:
            raise MissingSecret(f"{self.name}: environment variable {variable} is empty or unset")
        return value

    def needs(self, secret: str, target: str, what: str, *, digits: bool = True) -> list[str]:
        """Return what every kind checks alike, one line each: the option naming the
        secret's environment variable, and each segment's ``<target>.<segment>`` option
        (``what`` the platform calls it; with ``digits``, a numeric id)."""
        problems = []
        if secret and not self.options.get(secret):
            problems.append(f"option {secret} (the environment variable of the secret) is not set")
        for segment in self.segments:
            value = self.target(segment, target)
            if not value:
                problems.append(f"option {target}.{segment} ({what}) is not set")
            elif digits and not (value.isascii() and value.isdigit()):
                problems.append(f"option {target}.{segment}: {value[:40]!r} is not {what} (digits)")
        return problems

    def target(self, segment_id: str, option: str) -> str:
        """Return the option ``<option>.<segment>`` (the platform's audience, list or group
        a segment goes to)."""
        return self.options.get(f"{option}.{segment_id}", "")


@dataclass(frozen=True, slots=True)
class Batch:
    """Rows for one platform call (or a few: a destination may split it further)."""

    op: Op
    segment_id: str
    target: str  # the platform's audience, list, group or tag for the segment
    rows: Sequence[Row]
    number: int  # 1-based within its sync and op (a replace session's batch_seq)
    last: bool  # the last batch of its op in this sync (a replace's last_batch_flag)
    session: str  # the sync's id (a replace session's id)
    total: int  # rows of this op in the whole sync (a replace's estimated_num_total)


@dataclass(slots=True)
class Outcome:
    """What the platform made of a batch: the rows it refused (index into ``Batch.rows``
    -> its reason; they count as not sent) and the rows it reports as unsubscribed or
    cleaned there (newsletter tools; dmp withdraws their ``email`` consent)."""

    failed: dict[int, str] = field(default_factory=dict)
    unsubscribed: list[int] = field(default_factory=list)


class ExportError(Exception):
    """A sync could not go on."""


class Unavailable(ExportError):  # noqa: N818
    """The platform is down or stayed throttled past every retry: try at the next sync."""


class Refused(ExportError):  # noqa: N818
    """The platform refused the request for a reason a retry will not cure."""


class MissingSecret(ExportError):
    """An option names an environment variable that is not set."""


class Destination(Protocol):
    """One platform dmp pushes audiences to (a module of ``exporters/`` each)."""

    channel: ClassVar[Category]  # the consent the channel needs: ads or email
    columns: ClassVar[tuple[str, ...]]  # a row's columns, as kept for what it holds
    # Index of the column that names the platform's record of a person (an email for the
    # newsletter tools): a changed row with the same key is re-added (an upsert), not
    # removed and added. None: rows are matched whole (remove the old, add the new).
    key: ClassVar[int | None]
    batch_size: ClassVar[int]  # rows per Batch (the platform's per-request limit)
    replaces: ClassVar[bool]  # takes Op.REPLACE (a full refresh in one session)

    def __init__(self, settings: Settings) -> None: ...

    @staticmethod
    def check(settings: Settings) -> list[str]:
        """Return what is wrong with the settings (a missing option, a segment without a
        target), one line each; [] when they will do. Reads no secret."""
        ...

    def encode(self, contacts: Sequence[Contact]) -> list[Row | None]:
        """Return each contact's row (None: nothing this platform can match on)."""
        ...

    def send(self, batch: Batch) -> Outcome:
        """Send one batch; return which rows the platform refused."""
        ...

    def test(self) -> str:
        """Make a cheap authenticated call; return what it proved (Refused if it fails)."""
        ...


@runtime_checkable
class Snapshotting(Protocol):
    """A destination that also keeps a full snapshot of what it holds (the file
    destination): the engine hands it every held row once a sync is complete."""

    def snapshot(self, segment_id: str, session: str, rows: Iterable[Row]) -> None:
        """Write the whole holding of a segment after the sync ``session``."""
        ...
