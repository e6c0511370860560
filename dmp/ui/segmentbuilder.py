"""The segment builder: a form for the segment language, its YAML kept in step, live
validation, preview and plan, and saving a definition as a new version.

Every view reads the posted form into a draft (:mod:`dmp.ui.builderform`) and checks it
(:mod:`dmp.ui.builderchecks`). ``form`` re-renders the whole builder after a button
(add, remove, use the YAML, preview: without JavaScript the page still works);
``check``, ``preview`` and ``plan`` answer the parts htmx swaps in as the user types.
Only ``save`` changes anything: a viewer may look at everything else.
"""

from __future__ import annotations

from typing import Any

from flask import Response, abort, redirect, render_template, request, url_for
from flask_babel import gettext as _

from dmp.membership import definitions
from dmp.ui import builderlive
from dmp.ui.builderchecks import Checked, check_draft, condition_yaml, yaml_draft
from dmp.ui.builderform import (
    Draft,
    FormError,
    apply_action,
    data_draft,
    draft_data,
    empty_draft,
    read_draft,
)
from dmp.ui.builderlabels import label
from dmp.ui.builderparts import CHOICES, CONDITIONS, OPS, Part, part_data
from dmp.ui.pages import changes_nothing, page_blueprint
from dmp.web.deps import current_deps

bp = page_blueprint("segment_builder", __name__, "/segments/builder")
SEGMENT_PAGE = "/ui/segments/{}"


@bp.app_template_global("builder_label")
def builder_label(name: str) -> str:
    """Return the page's word for a kind, operator or value of the builder."""
    return label(name)


@bp.app_template_global("builder_number")
def builder_number(name: str) -> str:
    """Return a part's position as people count it: ``w-0-1`` is 1.2."""
    return ".".join(str(int(i) + 1) for i in name.split("-")[1:])


@bp.app_template_global("builder_yaml")
def builder_yaml(text: str) -> str:
    """Return a read-only condition (JSON, as the form keeps it) as one line of YAML."""
    return condition_yaml(part_data(Part("raw", {"json": text})))


@bp.app_template_global("builder_rough")
def builder_rough(value: int, margin: int) -> int:
    """Return an estimate rounded as far as its margin allows (two digits of the margin)."""
    unit = _unit(margin)
    return round(value / unit) * unit


@bp.app_template_global("builder_margin")
def builder_margin(margin: int) -> int:
    """Return an estimate's margin rounded up to two significant digits."""
    unit = _unit(margin)
    return -(-margin // unit) * unit


def _unit(margin: int) -> int:
    return 10 ** max(0, len(str(max(0, int(margin)))) - 2)


@bp.get("/")
def new() -> str:
    """Show an empty builder for a new segment."""
    draft = empty_draft()
    _warm()
    return _page(draft, check_draft(draft))


@bp.get("/<sid>")
def edit(sid: str) -> str | tuple[str, int]:
    """Show the builder holding a stored segment's definition."""
    stored = definitions.get_segment(current_deps().redis, sid)
    if stored is None:
        abort(404)
    _warm()
    try:
        draft = data_draft(stored.definition.source, stored=sid)
    except FormError as exc:
        draft = empty_draft(sid)
        return _page(draft, check_draft(draft), form_error=str(exc)), 422
    return _page(draft, check_draft(draft))


@bp.post("/form")
@changes_nothing
def form() -> tuple[str, int]:
    """Re-render the builder after a button: add or remove a part, use the YAML, preview."""
    try:
        draft = read_draft(request.form)
    except FormError as exc:
        return _unreadable(exc)
    action, yaml_error = request.form.get("do", ""), ""
    try:
        if action == "yaml":
            draft = yaml_draft(request.form.get("yaml", ""), draft.stored)
        else:
            draft = apply_action(draft, action, request.form)
    except FormError as exc:
        yaml_error = str(exc)
    checked = check_draft(draft, _taken(draft))
    status = 422 if yaml_error and not request.headers.get("HX-Request") else 200
    shown = _computed(checked) if action == "preview" else {}
    return _page(draft, checked, yaml_error=yaml_error, **shown), status


@bp.post("/check")
@changes_nothing
def check() -> str:
    """Answer a form change: the problems (each beside its condition) and the YAML view."""
    try:
        draft = read_draft(request.form)
    except FormError as exc:
        return render_template("ui/builder/unreadable.html", error=str(exc))
    checked = check_draft(draft, _taken(draft))
    names = sorted(set(draft_data(draft)[1].values()))
    return render_template(
        "ui/builder/check.html", checked=checked, names=names, draft=draft, urls=_urls()
    )


@bp.post("/preview")
@changes_nothing
def preview() -> str:
    """Answer the live preview: size, share, breakdowns, members and what each met."""
    return _live("ui/builder/preview.html", builderlive.live_preview)


@bp.post("/plan")
@changes_nothing
def plan() -> str:
    """Answer the plan: who saving the definition would add and remove."""
    return _live("ui/builder/plan.html", builderlive.live_plan)


@bp.post("/save")
def save() -> Response | tuple[str, int]:
    """Store the definition as a new version and show its segment page."""
    try:
        draft = read_draft(request.form)
    except FormError as exc:
        return _unreadable(exc)
    checked = check_draft(draft, _taken(draft))
    if checked.definition is None:
        return _page(draft, checked, saving=True), 409 if _taken(draft) else 422
    definitions.apply_definitions(current_deps().redis, [checked.definition])
    return redirect(SEGMENT_PAGE.format(checked.definition.id), 303)


def _live(template: str, compute: Any) -> str:
    try:
        draft = read_draft(request.form)
    except FormError as exc:
        return render_template("ui/builder/unreadable.html", error=str(exc))
    checked = check_draft(draft)
    if checked.shown is None:
        return render_template(template, found=None, invalid=True)
    deps = current_deps()
    try:
        found = compute(deps.config, deps.redis, checked.shown)
    except LookupError:
        return render_template(template, found=None, invalid=False)
    where = draft_data(draft)[1]
    return render_template(template, found=found, invalid=False, where=where, urls=_urls())


def _warm() -> None:
    """Have the sample for estimates read while the marketer starts (see builderlive)."""
    deps = current_deps()
    builderlive.warm(deps.config, deps.redis)


def _computed(checked: Checked) -> dict[str, Any]:
    """The preview and plan shown in the page itself (the no-JavaScript Preview button)."""
    if checked.shown is None:
        return {}
    deps, shown = current_deps(), {}
    for name, compute in (("preview", builderlive.live_preview), ("plan", builderlive.live_plan)):
        try:
            shown[name] = compute(deps.config, deps.redis, checked.shown)
        except LookupError:
            shown[name] = None
    return {"inline": shown}


def _taken(draft: Draft) -> bool:
    ident = draft.meta.get("id", "").strip()
    if draft.stored or not ident:
        return False
    return definitions.get_segment(current_deps().redis, ident) is not None


def _unreadable(exc: FormError) -> tuple[str, int]:
    draft = empty_draft()
    return _page(draft, check_draft(draft), form_error=str(exc)), 400


def _urls() -> dict[str, str]:
    return {name: url_for(f".{name}") for name in ("form", "check", "preview", "plan", "save")}


def _page(draft: Draft, checked: Checked, **shown: Any) -> str:
    return render_template(
        "ui/builder/page.html",
        draft=draft,
        checked=checked,
        kinds=CONDITIONS,
        ops=OPS,
        choices=CHOICES,
        urls=_urls(),
        where=draft_data(draft)[1],
        title=_("Edit segment") if draft.stored else _("New segment"),
        **shown,
    )
