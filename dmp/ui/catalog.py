"""The UI's German catalogue: one ``.po`` file per page area, compiled into one ``.mo``.

Translations are written in ``dmp/ui/messages/de/<area>.po`` (an area's strings beside
its neighbours', so two people can translate two areas at once) and compiled into the
``translations/de/LC_MESSAGES/messages.mo`` Flask-Babel reads, which is committed: dmp
runs without a build step. ``python -m dmp.ui.catalog`` compiles; ``--check`` exits 1 if
the committed file is stale or a string of the UI has no German; ``--missing`` prints
the strings still to translate as ``.po`` entries.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from babel.messages.catalog import Catalog, Message
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

HERE = Path(__file__).parent
SOURCES = HERE / "messages"
COMPILED = HERE / "translations"
LOCALES = ("de",)  # English is the source language
KEYWORDS = {"_": None, "gettext": None, "lazy_gettext": None, "_l": None, "ngettext": (1, 2)}
METHODS = [("**.py", "python"), ("templates/**.html", "jinja2")]
_FIXED = datetime(2026, 1, 1, tzinfo=UTC)  # the header's dates: the same bytes every build


class CatalogError(ValueError):
    """The fragments contradict each other (the message says where)."""


def fragments(locale: str) -> list[Path]:
    """Return the locale's ``.po`` files, by name."""
    return sorted((SOURCES / locale).glob("*.po"))


def merged(locale: str) -> Catalog:
    """Return one catalogue of every fragment of ``locale`` (CatalogError on a clash)."""
    catalog = Catalog(
        locale=locale, project="dmp", creation_date=_FIXED, revision_date=_FIXED, fuzzy=False
    )
    origin: dict[object, str] = {}
    for path in fragments(locale):
        with path.open("rb") as file:
            for message in read_po(file, locale=locale):
                if not message.id:
                    continue  # the fragment's own header
                known = catalog.get(message.id, message.context)
                if known is not None and known.string != message.string:
                    other = origin[message.id]
                    raise CatalogError(f"{path.name}: {message.id!r} differs in {other}")
                catalog.add(message.id, message.string, context=message.context)
                origin[message.id] = path.name
    return catalog


def compiled(locale: str) -> bytes:
    """Return the ``.mo`` bytes of ``locale``'s merged catalogue."""
    out = io.BytesIO()
    write_mo(out, merged(locale))
    return out.getvalue()


def mo_path(locale: str) -> Path:
    """Return where the compiled catalogue of ``locale`` is committed."""
    return COMPILED / locale / "LC_MESSAGES" / "messages.mo"


def used_strings() -> set[str]:
    """Return every string the UI's Python code and templates translate."""
    found = extract_from_dir(str(HERE), METHODS, keywords=KEYWORDS)
    return {message if isinstance(message, str) else message[0] for _, _, message, *_ in found}


def missing(locale: str) -> list[str]:
    """Return the UI's strings that ``locale`` has no translation for, sorted."""
    translated = {_singular(m.id): m for m in merged(locale) if m.id}
    return sorted(s for s in used_strings() if not _translated(translated.get(s)))


def unused(locale: str) -> list[str]:
    """Return translated strings the UI no longer uses, sorted."""
    used = used_strings()
    return sorted(_singular(m.id) for m in merged(locale) if m.id and _singular(m.id) not in used)


def _singular(msgid: str | tuple[str, ...]) -> str:
    """Return a message's id (a plural's singular form)."""
    return msgid if isinstance(msgid, str) else msgid[0]


def _translated(message: Message | None) -> bool:
    """Return whether a message has its translation (every form of a plural)."""
    if message is None:
        return False
    forms = message.string if isinstance(message.string, tuple | list) else (message.string,)
    return all(forms)


def _problems() -> Iterator[str]:
    for locale in LOCALES:
        for text in missing(locale):
            yield f"{locale}: no translation for {text!r}"
        for text in unused(locale):
            yield f"{locale}: {text!r} is translated but no longer used"
        path = mo_path(locale)
        if not path.exists() or path.read_bytes() != compiled(locale):
            yield f"{path.relative_to(HERE.parent.parent)} is stale: run python -m dmp.ui.catalog"


def main(argv: list[str] | None = None) -> int:
    """Compile, check or list what is missing; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m dmp.ui.catalog", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if anything is stale")
    parser.add_argument("--missing", action="store_true", help="print untranslated strings")
    args = parser.parse_args(argv)
    if args.missing:
        for locale in LOCALES:
            for text in missing(locale):
                escaped = text.replace("\\", "\\\\").replace('"', '\\"')
                print(f'msgid "{escaped}"\nmsgstr ""\n')
        return 0
    if args.check:
        problems = list(_problems())
        for line in problems:
            print(line, file=sys.stderr)
        return 1 if problems else 0
    for locale in LOCALES:
        mo_path(locale).parent.mkdir(parents=True, exist_ok=True)
        mo_path(locale).write_bytes(compiled(locale))
        print(f"{mo_path(locale)}: {len(merged(locale))} strings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
