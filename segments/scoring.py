"""The lead-scoring model: fit rules on traits, decaying activity rules on touchpoints.

``score = fit_score + activity_score`` with
``activity_score = Σ points × 0.5 ** (age_days / half_life_days)``, ages in fractional
days before the build's as-of time. Every point is kept per rule, so that each score can
be explained. The model is a YAML file (``default_scoring.yaml`` ships with dmp).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from dmp.records import Tier
from segments.rules import RuleError, When, parse_when
from segments.yamltext import load_yaml

DAY_MS = 86_400_000
DEFAULT_MODEL = "default_scoring.yaml"


@dataclass(frozen=True, slots=True)
class Rule:
    """Points for a person (fit) or for each touchpoint (activity) that meets ``when``."""

    name: str  # how breakdowns name it
    when: When
    points: float
    max_per_day: int | None = None  # activity only: matching touchpoints counted per day


@dataclass(frozen=True, slots=True)
class StageRules:
    """When the model makes a lead an MQL, and when an MQL goes back to nurturing."""

    mql_score_gte: float
    mql_tier_gte: Tier
    recycle_after_days: float


@dataclass(frozen=True, slots=True)
class ScoringModel:
    """A whole scoring model."""

    fit: tuple[Rule, ...]
    half_life_days: float
    activity: tuple[Rule, ...]
    stages: StageRules


def load_model(data: Any) -> ScoringModel:
    """Return the model a parsed YAML/JSON document describes (RuleError names the path)."""
    if not isinstance(data, Mapping):
        raise RuleError("model", "expected a mapping with fit, activity and stages")
    _only(data, "model", {"fit", "activity", "stages"})
    fit = tuple(_rules(data.get("fit", []), "fit", scope="person"))
    activity = data.get("activity", {})
    if not isinstance(activity, Mapping):
        raise RuleError("activity", "expected a mapping with half_life_days and rules")
    _only(activity, "activity", {"half_life_days", "rules"})
    half_life = _number(activity.get("half_life_days", 30), "activity.half_life_days")
    if not 1 <= half_life <= 3650:
        raise RuleError("activity.half_life_days", "expected a number of days from 1 to 3650")
    rules = tuple(_rules(activity.get("rules", []), "activity.rules", scope="touchpoint"))
    return ScoringModel(fit, float(half_life), rules, _stage_rules(data.get("stages", {})))


def parse_model(text: str, source: str = "model") -> ScoringModel:
    """Return the model in a YAML (or JSON) text."""
    return load_model(load_yaml(text, source))


def default_model_text() -> str:
    """Return the YAML of the model dmp ships with."""
    return resources.files("segments").joinpath(DEFAULT_MODEL).read_text(encoding="utf-8")


def _rules(items: Any, path: str, *, scope: str) -> list[Rule]:
    if not isinstance(items, list):
        raise RuleError(path, "expected a list of rules")
    rules, names = [], set()
    for i, item in enumerate(items):
        at = f"{path}[{i}]"
        if not isinstance(item, Mapping):
            raise RuleError(at, "expected a mapping with when and points")
        allowed = {"name", "when", "points"} | ({"max_per_day"} if scope == "touchpoint" else set())
        _only(item, at, allowed)
        if "when" not in item or "points" not in item:
            raise RuleError(at, "a rule needs when and points")
        when = parse_when(item["when"], f"{at}.when", scope=scope)
        points = _number(item["points"], f"{at}.points")
        cap = item.get("max_per_day")
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise RuleError(f"{at}.max_per_day", "expected a whole number of at least 1")
        name = item.get("name", when.describe())
        if not isinstance(name, str) or not name.strip():
            raise RuleError(f"{at}.name", "expected a non-empty string")
        if name in names:
            raise RuleError(f"{at}.name", f"two rules named {name!r}: name one of them")
        names.add(name)
        rules.append(Rule(name, when, float(points), cap))
    return rules


def _stage_rules(data: Any) -> StageRules:
    if not isinstance(data, Mapping):
        raise RuleError("stages", "expected a mapping with mql and recycle_after_days")
    _only(data, "stages", {"mql", "recycle_after_days"})
    mql = data.get("mql", {})
    if not isinstance(mql, Mapping):
        raise RuleError("stages.mql", "expected a mapping with score_gte and tier_gte")
    _only(mql, "stages.mql", {"score_gte", "tier_gte"})
    tier = mql.get("tier_gte", "medium")
    if tier not in Tier._value2member_map_:
        raise RuleError("stages.mql.tier_gte", "expected one of low, medium, high")
    recycle = _number(data.get("recycle_after_days", 90), "stages.recycle_after_days")
    if recycle <= 0:
        raise RuleError("stages.recycle_after_days", "expected a positive number of days")
    score = _number(mql.get("score_gte", 60), "stages.mql.score_gte")
    return StageRules(float(score), Tier(tier), float(recycle))


def _only(data: Mapping, path: str, allowed: set[str]) -> None:
    for key in data:
        if key not in allowed:
            raise RuleError(f"{path}.{key}", f"unknown key (expected {', '.join(sorted(allowed))})")


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RuleError(path, "expected a number")
    return float(value)
