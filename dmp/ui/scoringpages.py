"""The scoring pages: the model in use, readable and as YAML; an editor with live
validation; a plan of who would change score band and stage; applying the model."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Response, redirect, render_template, request, url_for
from flask_babel import gettext as _

from dmp.matrix import snapshots
from dmp.matrix.rescoring import Move, RescoringPlan, plan_rescoring
from dmp.records import Stage
from dmp.storage import keyspace
from dmp.ui.pages import changes_nothing, page_blueprint
from dmp.web.deps import current_deps
from segments.rescoring import band_edges
from segments.rules import RuleError
from segments.scoring import ScoringModel, default_model_text, parse_model

bp = page_blueprint("scoring_pages", __name__, "/scoring")
MAX_YAML = 64 * 1024  # characters of a model's YAML (the default one has 3,000)


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong with a model's YAML, and where (a path such as fit[0].points)."""

    path: str
    text: str


def _checked(text: str) -> tuple[ScoringModel | None, Problem | None]:
    """Return the model of ``text``, or None and what is wrong."""
    if len(text) > MAX_YAML:
        return None, Problem("", _("The model is too long: at most %(n)s characters.", n=MAX_YAML))
    if not text.strip():
        return None, Problem("", _("The model is empty."))
    try:
        return parse_model(text, "model"), None
    except RuleError as exc:
        return None, Problem(exc.path, exc.problem)


@dataclass(frozen=True, slots=True)
class Grid:
    """A from→to table of counts: row labels are before, columns after."""

    keys: tuple[str, ...]
    counts: dict[tuple[str, str], int]

    def total(self, before: str) -> int:
        """Return how many persons were in ``before``."""
        return sum(n for (b, _a), n in self.counts.items() if b == before)


def grid(moves: tuple[Move, ...], order: tuple[str, ...]) -> Grid:
    """Return the moves as a table over the keys of ``order`` that occur (in that order)."""
    seen = {m.before for m in moves} | {m.after for m in moves}
    keys = tuple(k for k in order if k in seen) + tuple(sorted(seen - set(order)))
    return Grid(keys, {(m.before, m.after): m.persons for m in moves})


def _current() -> tuple[str, ScoringModel, bool]:
    """Return the applied model's YAML, the model, and whether it is the default one."""
    text = current_deps().redis.get(keyspace.SCORING_MODEL)
    chosen = text or default_model_text()
    return chosen, parse_model(chosen), text is None


@bp.get("/")
def index() -> str:
    """Show the model in use: its rules readably, and its YAML."""
    text, model, default = _current()
    return render_template(
        "ui/scoring/index.html",
        text=text,
        model=model,
        default=default,
        edges=band_edges(model),
        applied=request.args.get("applied") == "1",
        every=current_deps().config.segments_every,
    )


def _editor(text: str, status: int = 200, **extra: object) -> tuple[str, int]:
    model, error = _checked(text)
    page = render_template(
        "ui/scoring/edit.html",
        text=text,
        model=model,
        error=error,
        max_yaml=MAX_YAML,
        built=latest_as_of(),
        **extra,
    )
    return page, status


@bp.get("/edit")
def edit() -> tuple[str, int]:
    """Show the editor, filled with the model in use."""
    return _editor(_current()[0])


@bp.post("/check")
@changes_nothing
def check() -> str:
    """Return the live validation of the YAML being edited (an htmx fragment)."""
    model, error = _checked(request.form.get("model", ""))
    return render_template("ui/scoring/_check.html", model=model, error=error)


@bp.post("/plan")
@changes_nothing
def plan() -> tuple[str, int]:
    """Compute what the edited model would change over the latest build."""
    text = request.form.get("model", "")
    model, error = _checked(text)
    result: RescoringPlan | None = None
    missing = False
    if model is not None:
        try:
            result = plan_rescoring(current_deps().redis, current_deps().config, model)
        except LookupError:
            missing = True
    status = 422 if error else 200
    shown = {"plan": result, "missing": missing, "planned": True}
    if result is not None:
        bands = tuple(str(i) for i in range(len(result.edges) + 1))
        shown["bands"] = grid(result.bands, bands)
        shown["stages"] = grid(result.stages, tuple(s.value for s in Stage))
    if request.headers.get("HX-Request"):
        return render_template("ui/scoring/_plan.html", error=error, **shown), status
    return _editor(text, status, **shown)


@bp.post("/apply")
def apply() -> Response | tuple[str, int]:
    """Store the edited model (as ``dmp scoring apply`` does): the next build uses it."""
    text = request.form.get("model", "")
    model, error = _checked(text)
    if model is None:
        return _editor(text, 422)
    current_deps().redis.set(keyspace.SCORING_MODEL, text)
    return redirect(url_for("scoring_pages.index", applied="1"), 303)


def latest_as_of() -> int | None:
    """Return the as-of time of the latest build (None before one)."""
    try:
        return int(snapshots.latest_build(current_deps().config)[1]["as_of"])
    except LookupError:
        return None
