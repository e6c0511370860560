"""Consent per identifier and category, with proof of every grant and withdrawal.

A consent is given by someone, somewhere, for something: the browser behind a cookie
agrees to ads on that browser; the owner of an email address agrees to newsletters to
that address. So dmp keeps consent per *identifier* and category, never per person: a
person's channel is usable only with a consent valid for the identifier the channel
uses (retargeting a cookie needs that browser's ``ads`` consent; an email in an ad
audience needs ``ads`` given for that email; a newsletter needs ``email`` for it).

Where (under the person's hash tag, see ``dmp.storage.keyspace.person``):

- profile hash fields ``c|<category>|<kind>:<value>`` -> ``1:<ms>`` or ``0:<ms>``: the
  current state and when it was given (what the worker, lookups and matrix read; in
  the profile hash, so that a new person costs no command more and a lookup one HGET);
- ``:consentlog`` list of JSON proofs, in the order they were applied, never trimmed:
  for every change the category, state, identifier, time, source, site, event, whether
  the sender was trusted, the consent text version or TC string hash, double opt-in
  where the source reports it, and for a newsletter tool's event the tool, its own name
  for the event and the reason it gave (TTDSG §25 and GDPR Art. 7(1): the company must
  prove consent).

Changes apply in event-time order (:func:`applies`): a state changes only for a hit
whose time is not older than the time of the state held. Hits arrive out of order (a
newsletter export imported days later, a spooled hit replayed): an ``open`` of an old
mail read after the unsubscribe, or a ``sent`` from before it, must not grant again. A
hit repeating the state held changes nothing, not even its time: the time is that of
the change, which its proof records.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from dmp.people.identity import Identifier, IdKind
from dmp.records import Category, Hit, dump_json
from dmp.storage import keyspace

STATE_PREFIX = "c|"  # profile hash fields holding consent states start with it
LOG_FACET = "consentlog"
# What a newsletter tool's hit says of itself in its properties, kept in the proof.
TOOL_PROPERTIES = ("tool", "tool_event", "reason")

Held = tuple[bool, int]  # a state as the worker holds it: granted, and since when (ms)

# The identifiers a browser brings itself: a claim may always speak for them.
BROWSER_KINDS = frozenset({IdKind.UID, IdKind.ANON})
# Who can hold a consent: browsers, and the addresses channels reach people at.
HOLDER_KINDS = frozenset({IdKind.UID, IdKind.ANON, IdKind.EMAIL, IdKind.PHONE})


def state_field(category: str, ident: Identifier) -> str:
    """Return the profile hash field of one category's state for one identifier."""
    return f"{STATE_PREFIX}{category}|{ident.text}"


def split_field(name: str) -> tuple[str, Identifier]:
    """Return the category and identifier of a consent state field."""
    category, _, text = name[len(STATE_PREFIX) :].partition("|")
    return category, Identifier.from_text(text)


def is_state_field(name: str) -> bool:
    """Return whether a profile hash field holds a consent state."""
    return name.startswith(STATE_PREFIX)


def state_value(granted: bool, at: int) -> str:
    """Return the stored form of a consent state given at ``at`` (ms)."""
    return f"{int(granted)}:{at}"


def parse_value(value: str | bytes) -> tuple[bool, int]:
    """Return (granted, at ms) of a stored consent state."""
    text = value.decode() if isinstance(value, bytes) else value
    granted, _, at = text.partition(":")
    return granted == "1", int(at or 0)


def parse_states(raw: Mapping[Any, Any]) -> dict[str, bool]:
    """Return field -> granted of the consent states in a profile hash as Redis returns it."""
    return {name: held[0] for name, held in parse_held(raw).items()}


def parse_held(raw: Mapping[Any, Any]) -> dict[str, Held]:
    """Return field -> (granted, since ms) of the consent states in a profile hash."""
    out = {}
    for name, value in raw.items():
        text = name.decode() if isinstance(name, bytes) else name
        if text.startswith(STATE_PREFIX):
            out[text] = parse_value(value)
    return out


def applies(held: Held | None, granted: bool, at: int) -> bool:
    """Return whether a hit at ``at`` saying ``granted`` changes the state ``held``: it
    differs, and it is not older than the state's time (event-time order)."""
    return held is None or (held[0] is not granted and held[1] <= at)


def holders(
    hit: Hit, ids: Iterable[Identifier], trusted_elsewhere: Callable[[Identifier], bool]
) -> list[Identifier]:
    """Return the identifiers a hit's consent speaks for.

    A trusted hit (the company's own systems) speaks for every identifier it carries
    that can hold consent. A browser's claim speaks for its own browser ids, and for an
    email or phone only if no trusted source holds that address (``trusted_elsewhere``):
    a public write key must not grant ``ads`` for a CRM contact's email.
    """
    out = []
    for ident in ids:
        if ident.kind not in HOLDER_KINDS:
            continue
        if hit.trusted or ident.kind in BROWSER_KINDS or not trusted_elsewhere(ident):
            out.append(ident)
    return out


def proof(hit: Hit, changed: Mapping[str, bool], ident: Identifier) -> str:
    """Return the JSON proof of the consent changes ``hit`` brought for ``ident``: the
    states it set per category (one proof per identifier and hit)."""
    record: dict[str, Any] = {
        "consent": dict(changed),
        "identifier": ident.text,
        "at": hit.timestamp,
        "source": hit.source,
        "site": hit.site_id,
        "event_id": hit.event_id,
        "trusted": hit.trusted,
    }
    if hit.consent_version:
        record["version"] = hit.consent_version
    said = hit.properties
    if said:
        doi = said.get("double_opt_in")
        if isinstance(doi, bool) and Category.EMAIL.value in changed:
            record["double_opt_in"] = doi
        for name in TOOL_PROPERTIES:  # which newsletter tool said so, and why
            value = said.get(name)
            if isinstance(value, str) and value:
                record[name] = value
    return dump_json(record)


def history(raw_log: Iterable[str | bytes]) -> list[dict[str, Any]]:
    """Return a ``:consentlog`` as one record per category change, oldest first."""
    out = []
    for entry in raw_log:
        record = json.loads(entry)
        changes = record.pop("consent", None)
        if changes is None:  # one category per proof (as the migration writes them)
            out.append(record)
            continue
        for category, granted in changes.items():
            out.append({"category": category, "granted": granted, **record})
    return out


def usable(states: Mapping[str, bool], email: str) -> list[str]:
    """Return the categories a person's channels may use, as the matrix lists them.

    ``analytics`` with any identifier's; ``ads`` with a browser's (retargeting the
    cookie) or the person's email's (ad audiences of hashed emails); ``email`` only with
    one given for the person's current email.
    """
    found = set()
    for name, granted in states.items():
        if not granted:
            continue
        category, _, text = name[len(STATE_PREFIX) :].partition("|")
        kind = text.partition(":")[0]
        if category == Category.ANALYTICS.value:
            found.add(category)
        elif category == Category.ADS.value and (
            kind in (IdKind.UID.value, IdKind.ANON.value) or text == f"email:{email}"
        ):
            found.add(category)
        elif category == Category.EMAIL.value and email and text == f"email:{email}":
            found.add(category)
    return sorted(found)


def iso(ms: int) -> str:
    """Return a ms time as ISO-8601 UTC."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def consent_view(raw_log: Iterable[str | bytes], states: Mapping[str, bool]) -> dict[str, Any]:
    """Return a person's consents as the API shows them: per category, each identifier's
    current state with the proof that set it, and the whole history."""
    records = history(raw_log)
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        latest[(record["category"], record["identifier"])] = record
    current: dict[str, list[dict[str, Any]]] = {}
    for name, granted in sorted(states.items()):
        category, ident = split_field(name)
        record = latest.get((category, ident.text), {"granted": granted})
        current.setdefault(category, []).append(
            {**record, "identifier": ident.text, "granted": granted, "at": iso(record["at"])}
            if "at" in record
            else {"identifier": ident.text, "granted": granted}
        )
    return {
        "current": current,
        "history": [{**r, "at": iso(r["at"])} for r in records],
    }


def migrate_person_level(r: Any) -> int:
    """Move consents kept per person (before consent was kept per identifier: ``c:<category>``
    proof fields and a ``cs`` summary in the profile hash) to the identifiers they were
    given for; return how many persons were migrated.

    A browser's consent (pixel, tag) is taken as given for each of the person's cookies
    and anonymous ids; any other source's for the person's email. Runs once (the worker
    calls it on taking its lease; ``keyspace.MIGRATED_CONSENTS`` marks it done).
    """
    if r.exists(keyspace.MIGRATED_CONSENTS):
        return 0
    moved = 0
    for key in r.scan_iter(match=keyspace.person_pattern(), count=1000):
        fields = r.hgetall(key)
        old = {n: v for n, v in fields.items() if n.startswith("c:")}
        if not old and "cs" not in fields:
            continue
        pid = keyspace.person_id_of(key)
        idents = [Identifier.from_text(t) for t in r.smembers(keyspace.person(pid, "identifiers"))]
        states, proofs = {}, []
        for name, text in old.items():
            record = json.loads(text)
            browser = record.get("source") in ("pixel", "tag")
            for ident in idents:
                if (ident.kind in BROWSER_KINDS) if browser else ident.kind is IdKind.EMAIL:
                    category, granted = name[2:], bool(record["granted"])
                    states[state_field(category, ident)] = state_value(granted, record["at"])
                    proofs.append(
                        dump_json(
                            {
                                **record,
                                "category": category,
                                "identifier": ident.text,
                                "trusted": not browser,
                                "migrated": True,
                            }
                        )
                    )
        with r.pipeline(transaction=True) as pipe:
            if states:
                pipe.hset(key, mapping=states)
                pipe.rpush(keyspace.person(pid, LOG_FACET), *proofs)
            pipe.hdel(key, *old, "cs")
            pipe.execute()
        moved += 1
    r.set(keyspace.MIGRATED_CONSENTS, "1")
    return moved
