"""The UI's two languages: German and English text, dates and numbers per language.

The language is the one the user chose (a cookie set by the switch in every page's
header), else the best match of the browser's ``Accept-Language``, else English. Text is
translated with Flask-Babel from the catalogue :mod:`dmp.ui.catalog` compiles; numbers
and dates are formatted by Babel's CLDR data (``1.234.567`` and ``29.11.2026`` in German).
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from babel.numbers import get_group_symbol
from flask import Flask, request
from flask_babel import (
    Babel,
    format_date,
    format_datetime,
    format_decimal,
    format_percent,
    get_locale,
)

LANGUAGES = ("en", "de")  # the first is the fallback
NAMES = {"en": "English", "de": "Deutsch"}
COOKIE = "dmp_lang"
TRANSLATIONS = Path(__file__).parent / "translations"


def select_language() -> str:
    """Return the request's language: the chosen one, else the browser's best, else English."""
    chosen = request.cookies.get(COOKIE)
    if chosen in LANGUAGES:
        return chosen
    return request.accept_languages.best_match(LANGUAGES) or LANGUAGES[0]


def install(app: Flask) -> None:
    """Give ``app`` the UI's translations and the template filters for numbers and dates."""
    Babel(app, locale_selector=select_language, default_translation_directories=str(TRANSLATIONS))
    app.jinja_env.filters.update(number=number, percent=percent, when=when, day=day)
    app.jinja_env.globals.update(language=language, LANGUAGES=LANGUAGES, LANGUAGE_NAMES=NAMES)


def language() -> str:
    """Return the language of the current request's page."""
    return str(get_locale() or LANGUAGES[0])


def number(value: float | int | None) -> str:
    """Return a number formatted for the page's language ('–' for none). Whole numbers take
    a fast path (Babel's formatter costs some 30 µs a call; a page may show thousands)."""
    if value is None:
        return "–"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return f"{int(value):,}".replace(",", _group(language()))
    return format_decimal(value)


@cache
def _group(locale: str) -> str:
    """Return the language's digit-grouping symbol ('.' in German, ',' in English)."""
    return get_group_symbol(locale)


def percent(value: float | None, digits: int = 1) -> str:
    """Return a share (0.0–1.0) as a percentage for the page's language ('–' for none)."""
    if value is None:
        return "–"
    return format_percent(value, format=f"#,##0.{'0' * digits}%" if digits else None)


def when(ms: int | float | str | None) -> str:
    """Return a moment (epoch ms) as a date and time for the page's language, in UTC."""
    if ms in (None, ""):
        return "–"
    moment = datetime.fromtimestamp(float(ms) / 1000, UTC)
    return format_datetime(moment, "short") + " UTC"


def day(ms: int | float | str | None) -> str:
    """Return a moment (epoch ms) as a date for the page's language."""
    if ms in (None, ""):
        return "–"
    return format_date(datetime.fromtimestamp(float(ms) / 1000, UTC), "medium")
