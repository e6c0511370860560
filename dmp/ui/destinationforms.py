"""The form that adds or changes a destination: name, segments, schedule and the kind's
options as labelled fields, checked by ``exporters.settings`` (whose words about what is
wrong appear beside the field they concern)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import redis
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import Field, SelectField, SelectMultipleField, StringField, TextAreaField
from wtforms.validators import InputRequired, Length
from wtforms.widgets import CheckboxInput, ListWidget

from dmp.ui.destinationkinds import Kind, Option
from dmp.ui.destinationstate import every_field
from dmp.ui.pages import options
from exporters import settings
from exporters.destination import Settings

MAX_MORE = 8000  # characters of "more options"
MAX_SEGMENTS = 100  # segments one destination may take (the API's limit)
# What the form asks for an environment variable: its name, as shells write them.
_VARIABLE = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")


class DestinationForm(FlaskForm):
    """The fields every kind has; :func:`form_class` adds the kind's own."""

    name = StringField(_l("Name"), validators=[InputRequired(), Length(max=64)])
    segments = SelectMultipleField(
        _l("Segments"), widget=ListWidget(prefix_label=False), option_widget=CheckboxInput()
    )
    every = StringField(_l("Sync every"), default="15m", validators=[Length(max=16)])
    more = TextAreaField(_l("More options"), validators=[Length(max=MAX_MORE)])


def option_field(option: Option) -> str:
    """Return the form field's name of a kind's (not per-segment) option."""
    return f"opt_{option.name}"


def target_field(option: Option, segment: str) -> str:
    """Return the form field's name of a per-segment option for one segment."""
    return f"target_{option.name}_{segment}"


def form_class(kind: Kind, segments: Sequence[str]) -> type[DestinationForm]:
    """Return the form of a kind: the common fields, its options and, for a per-segment
    option, a field for each of ``segments``."""
    fields: dict[str, Field] = {}
    for option in kind.options:
        if option.choices:
            choices = options(option.choices)
            fields[option_field(option)] = SelectField(option.label, choices=choices)
        elif option.per_segment:
            for segment in segments:
                fields[target_field(option, segment)] = StringField(
                    option.label, validators=[Length(max=settings.MAX_OPTION)]
                )
        else:
            fields[option_field(option)] = StringField(
                option.label, validators=[Length(max=settings.MAX_OPTION)]
            )
    return type(f"{kind.name.capitalize()}Form", (DestinationForm,), fields)


def make_form(kind: Kind, names: dict[str, str], found: Settings | None = None) -> DestinationForm:
    """Return the form of a kind for the stored segments (``names``: id -> name), filled
    from the request, else from ``found`` (a destination being changed)."""
    ids = list(names)
    if found is not None:
        ids += [s for s in found.segments if s not in names]  # removed since: still shown
    form = form_class(kind, ids)(data=_data(kind, found) if found is not None else None)
    form.segments.choices = options((sid, names.get(sid, sid)) for sid in ids)
    if found is not None:
        del form.name  # a destination's name is its key: it is not changed
    return form


def _data(kind: Kind, found: Settings) -> dict[str, object]:
    """Return the form's values of a stored destination."""
    options = dict(found.options)
    data: dict[str, object] = {
        "segments": list(found.segments),
        "every": every_field(found.every_seconds),
    }
    for option in kind.options:
        if option.per_segment:
            for segment in found.segments:
                data[target_field(option, segment)] = options.pop(f"{option.name}.{segment}", "")
        else:
            default = option.choices[0][0] if option.choices else ""
            data[option_field(option)] = options.pop(option.name, default)
    data["more"] = "\n".join(f"{k}={v}" for k, v in sorted(options.items()))
    return data


def read_settings(r: redis.Redis, form: DestinationForm, kind: Kind, name: str) -> Settings | None:
    """Return the settings the form says, checked; None with the form's errors set."""
    if not form.validate():
        return None
    chosen = list(form.segments.data or [])[: MAX_SEGMENTS + 1]
    if not chosen:
        form.segments.errors.append(_("Choose at least one segment."))
    if len(chosen) > MAX_SEGMENTS:
        form.segments.errors.append(_("At most %(num)s segments.", num=MAX_SEGMENTS))
    every = _every(form)
    options = _options(form, kind, chosen)
    if every is None or options is None or form.segments.errors:
        return None
    try:
        return settings.validate(r, name, kind.name, chosen, every, options)
    except settings.Invalid as exc:
        for problem in str(exc).split("; "):
            _field_of(form, kind, chosen, problem).errors.append(problem)
        return None


def _every(form: DestinationForm) -> int | None:
    """Return the schedule's seconds (None with the field's error set)."""
    try:
        seconds = settings.parse_every(form.every.data or "15m")
    except settings.Invalid:
        seconds = 0
    if not settings.MIN_EVERY <= seconds <= 30 * 86400:
        form.every.errors = [_("A duration from 1m to 30d, like 15m, 1h or 1d.")]
        return None
    return seconds


def _options(form: DestinationForm, kind: Kind, chosen: list[str]) -> dict[str, str] | None:
    """Return the options of the form's fields (None with the fields' errors set)."""
    lines = [x.strip() for x in (form.more.data or "").splitlines() if x.strip()]
    try:
        out = settings.parse_options(lines)
    except settings.Invalid:
        form.more.errors = [_("Write one option a line, as name=value.")]
        return None
    ok = True
    for option in kind.options:
        for field_name, key in _keys(option, chosen):
            field = form[field_name]
            value = (field.data or "").strip()
            if not value and option.required:
                field.errors = [_("Required.")]
                ok = False
            elif value and option.variable and not _VARIABLE.fullmatch(value):
                field.errors = [
                    _(
                        "The name of an environment variable (like %(example)s), not the secret.",
                        example=option.placeholder,
                    )
                ]
                ok = False
            elif value:
                out[key] = value
    return out if ok else None


def _keys(option: Option, chosen: list[str]) -> list[tuple[str, str]]:
    """Return (form field, option key) of an option: one, or one per chosen segment."""
    if option.per_segment:
        return [(target_field(option, s), f"{option.name}.{s}") for s in chosen]
    return [(option_field(option), option.name)]


def _field_of(form: DestinationForm, kind: Kind, chosen: list[str], problem: str) -> Field:
    """Return the field a problem of ``exporters.settings`` is about ('more' if none)."""
    head = problem.split(":", 1)[0].strip()
    if head in ("segments", "every") or (head == "name" and "name" in form):
        return form[head]
    for option in kind.options:
        for field_name, key in _keys(option, chosen):
            if re.search(rf"(^|\W){re.escape(key)}(\W|$)", problem):
                return form[field_name]
    return form.more
