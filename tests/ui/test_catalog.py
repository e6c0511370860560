"""The UI's German: every string translated, no stale ones, the committed .mo current."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmp.ui import catalog


def test_every_ui_string_has_a_german_translation() -> None:
    """No string of the templates or the UI's code is left in English on a German page."""
    assert catalog.missing("de") == []


def test_no_translation_is_left_over() -> None:
    """A translation whose string the UI no longer uses is removed, not kept as noise."""
    assert catalog.unused("de") == []


def test_the_committed_catalogue_is_compiled_from_the_fragments() -> None:
    """The .mo Flask-Babel reads is exactly what python -m dmp.ui.catalog compiles."""
    assert catalog.mo_path("de").read_bytes() == catalog.compiled("de")


def test_fragments_that_disagree_are_named(tmp_path: Path, monkeypatch) -> None:
    """Two areas translating one string differently is an error naming both files."""
    (tmp_path / "de").mkdir()
    for name, text in (("a.po", "Eins"), ("b.po", "Zwei")):
        (tmp_path / "de" / name).write_text(f'msgid "One"\nmsgstr "{text}"\n')
    monkeypatch.setattr(catalog, "SOURCES", tmp_path)
    with pytest.raises(catalog.CatalogError, match="b.po: 'One' differs in a.po"):
        catalog.merged("de")


def test_the_check_command_fails_on_a_missing_translation(monkeypatch, capsys) -> None:
    """``python -m dmp.ui.catalog --check`` exits 1 and names what is missing."""
    monkeypatch.setattr(catalog, "used_strings", lambda: {"A string nobody translated"})
    assert catalog.main(["--check"]) == 1
    assert "no translation for 'A string nobody translated'" in capsys.readouterr().err
