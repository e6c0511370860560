"""Plans: diff then fold converges to what should be held, whatever was held before and
whichever rows the platform refused on the way."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from exporters.destination import Op
from exporters.holdings import Entry, fingerprint
from exporters.plans import diff, fold

PERSONS = [f"p{i}" for i in range(8)]
ROWS = st.tuples(st.sampled_from(["a@x.de", "b@x.de", "c@x.de"]), st.sampled_from(["", "Anna"]))


def entries(rows: dict[str, list[tuple[str, str]]]) -> list[Entry]:
    """Return sorted entries of person -> rows."""
    out = []
    for pid in sorted(rows):
        for row in rows[pid]:
            out.append(Entry(pid, fingerprint((pid, *row)), (pid, *row)))
    return out


HELD = st.dictionaries(st.sampled_from(PERSONS), st.lists(ROWS, min_size=1, max_size=2))
SHOULD = st.dictionaries(st.sampled_from(PERSONS), ROWS.map(lambda r: [r]))


def apply(held: list[Entry], should: list[Entry], key: int | None, refuse: set[int]) -> list[Entry]:
    """Diff, send (refusing the plan rows numbered in ``refuse``) and fold."""
    ops = list(diff(held, should, key, full=False, replaces=False))
    removed = sorted(
        (e for i, (op, e) in enumerate(ops) if op is Op.REMOVE and i not in refuse),
        key=lambda e: e.person_id,
    )
    added = sorted(
        (e for i, (op, e) in enumerate(ops) if op is Op.ADD and i not in refuse),
        key=lambda e: e.person_id,
    )
    return list(fold(held, removed, added))


def held_set(found: list[Entry]) -> set[tuple[str, int]]:
    """Return (person, fingerprint) pairs."""
    return {(e.person_id, e.fp) for e in found}


@settings(max_examples=300, deadline=None)
@given(HELD, SHOULD, st.sampled_from([None, 1]))
def test_one_clean_sync_holds_exactly_what_should_be_held(held, should, key):
    """With nothing refused, a sync leaves exactly the rows that should be held."""
    want = entries(should)
    assert held_set(apply(entries(held), want, key, set())) == held_set(want)


@settings(max_examples=300, deadline=None)
@given(HELD, SHOULD, st.sampled_from([None, 1]), st.sets(st.integers(0, 20)))
def test_refused_rows_are_retried_until_they_converge(held, should, key, refuse):
    """Rows refused in one sync are sent again by the next, which then converges."""
    want = entries(should)
    after_one = apply(entries(held), want, key, refuse)
    assert held_set(apply(after_one, want, key, set())) == held_set(want)


def test_a_changed_row_of_an_upsert_destination_is_re_added_not_removed():
    """With a key column, a changed row with the same key is one add superseding the old."""
    held = entries({"p1": [("a@x.de", "")]})
    want = entries({"p1": [("a@x.de", "Anna")]})
    ops = list(diff(held, want, 1, full=False, replaces=False))
    assert [op for op, _ in ops] == [Op.ADD]
    assert ops[0][1].supersedes == held[0].fp
    ops = list(diff(held, want, None, full=False, replaces=False))
    assert [op for op, _ in ops] == [Op.REMOVE, Op.ADD]


def test_a_full_sync_resends_everything_and_a_replace_sends_only_what_should_be_held():
    """``full`` re-adds every row; on a replacing platform it is one replace session."""
    held = entries({"p1": [("a@x.de", "")], "p2": [("b@x.de", "")]})
    want = entries({"p1": [("a@x.de", "")]})
    ops = [op for op, _ in diff(held, want, None, full=True, replaces=False)]
    assert sorted(ops) == sorted([Op.REMOVE, Op.ADD])
    ops = [op for op, _ in diff(held, want, None, full=True, replaces=True)]
    assert ops == [Op.REPLACE]


def test_a_replace_of_nothing_removes_what_is_held():
    """A full sync of an empty audience on a replacing platform removes every held row (a
    replace session of no rows cannot be sent)."""
    held = entries({"p1": [("a@x.de", "")], "p2": [("b@x.de", "")]})
    ops = list(diff(held, [], None, full=True, replaces=True))
    assert [op for op, _ in ops] == [Op.REMOVE, Op.REMOVE]
