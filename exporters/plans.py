"""The difference between what a destination holds and what it should hold, and what it
holds once a plan's acknowledged part is folded in. Pure: sorted entries in, entries out.

Both sides are streams sorted by person id (``exporters.holdings``); they are walked in
step, one person at a time, so memory does not grow with the audience. A person may be
held in more than one row (a changed row whose removal the platform refused): every held
row that is not the one the person should have is removed.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from itertools import groupby

from exporters.destination import Op
from exporters.holdings import Entry


def by_person(*streams: Iterable[Entry]) -> Iterator[tuple[str, list[list[Entry]]]]:
    """Yield each person id with its entries from every stream (each stream sorted by
    person id), a list per stream."""
    tagged = [_tag(stream, i) for i, stream in enumerate(streams)]
    merged = heapq.merge(*tagged, key=lambda t: t[0])
    for pid, group in groupby(merged, key=lambda t: t[0]):
        parts: list[list[Entry]] = [[] for _ in streams]
        for _, i, entry in group:
            parts[i].append(entry)
        yield pid, parts


def _tag(stream: Iterable[Entry], tag: int) -> Iterator[tuple[str, int, Entry]]:
    for entry in stream:
        yield entry.person_id, tag, entry


def diff(
    held: Iterable[Entry], should: Iterable[Entry], key: int | None, *, full: bool, replaces: bool
) -> Iterator[tuple[Op, Entry]]:
    """Yield the removes and adds that take ``held`` to ``should``, person by person.

    ``key``: the row column naming the platform's record (a changed row with the same
    key is re-added over the old one, an upsert); None: the old row is removed and the
    new one added. ``full`` re-sends every row that should be held; with ``replaces``
    as one replace session (Op.REPLACE; the platform drops the rest itself).
    """
    if full and replaces:
        wanted = iter(should)
        first = next(wanted, None)
        if first is None:  # a replace session of no rows cannot be sent: remove them all
            for entry in {(e.person_id, e.fp): e for e in held}.values():
                yield Op.REMOVE, entry
            return
        yield Op.REPLACE, first
        for entry in wanted:
            yield Op.REPLACE, entry
        return
    for _, (mine, wanted) in by_person(held, should):
        yield from _person(mine, wanted[0] if wanted else None, key, full)


def _person(
    held: list[Entry], want: Entry | None, key: int | None, full: bool
) -> Iterator[tuple[Op, Entry]]:
    if want is None:
        for entry in {e.fp: e for e in held}.values():
            yield Op.REMOVE, entry
        return
    same = next((h for h in held if h.fp == want.fp), None)
    base = same
    if base is None and key is not None:
        base = next((h for h in held if h.row[key] == want.row[key]), None)
    kept = base.fp if base is not None else None
    for fp, entry in {e.fp: e for e in held}.items():  # a row held twice is one row
        if fp != kept:
            yield Op.REMOVE, entry
    if same is None or full:
        yield Op.ADD, Entry(want.person_id, want.fp, want.row, base.fp if base else 0)


def fold(
    held: Iterable[Entry], removed: Iterable[Entry], added: Iterable[Entry]
) -> Iterator[Entry]:
    """Yield what is held once ``removed`` are gone and ``added`` are in (each stream
    sorted by person id; an add drops the held row it supersedes)."""
    for _, (mine, gone, new) in by_person(held, removed, added):
        rows = {e.fp: e for e in mine}
        for entry in gone:
            rows.pop(entry.fp, None)
        for entry in new:
            if entry.supersedes:
                rows.pop(entry.supersedes, None)
            rows[entry.fp] = Entry(entry.person_id, entry.fp, entry.row)
        yield from sorted(rows.values(), key=lambda e: e.fp)
