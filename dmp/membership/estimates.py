"""Previews and plans estimated from a build's sample (:mod:`dmp.membership.previewsample`).

The definition is evaluated over the sample with the same code as the exact
:func:`dmp.membership.preview.preview` and :func:`dmp.membership.plan.plan`; each count
is scaled to the whole matrix, and the size and the numbers who would enter and leave
carry a 95% interval (Wilson's score interval for the sample's proportion, narrowed by
the finite-population correction: a sample of everyone has none). The members shown are
real persons of the sample, not the highest-scoring of all.
"""

from __future__ import annotations

import math
from typing import Any

import redis

from dmp.membership import definitions
from dmp.membership.plan import evaluate_plan
from dmp.membership.preview import SAMPLE, evaluate_preview
from dmp.membership.previewsample import Sample
from segments.definition import SegmentDefinition

Z = 1.96  # a 95% interval


def interval(hits: int, size: int, persons: int) -> tuple[int, int, int]:
    """Return the estimated count of all ``persons`` and its 95% interval (low, high)
    from ``hits`` of a random sample of ``size`` of them."""
    if size <= 0 or persons <= 0:
        return 0, 0, 0
    if size >= persons:
        return hits, hits, hits
    p, z2 = hits / size, Z * Z
    centre = (p + z2 / (2 * size)) / (1 + z2 / size)
    half = Z / (1 + z2 / size) * math.sqrt(p * (1 - p) / size + z2 / (4 * size * size))
    half *= math.sqrt((persons - size) / (persons - 1))
    low = max(hits, math.floor(persons * max(0.0, centre - half)))
    high = min(persons - (size - hits), math.ceil(persons * min(1.0, centre + half)))
    return round(p * persons), low, high


def scaled(count: int, sample: Sample) -> int:
    """Return a count in the sample scaled to the whole matrix."""
    return round(count / sample.fraction) if sample.size else 0


def _figure(hits: int, sample: Sample) -> dict[str, int]:
    """An estimated count with its interval and the ± shown beside it."""
    value, low, high = interval(hits, sample.size, sample.persons)
    return {"value": value, "low": low, "high": high, "margin": max(value - low, high - value)}


def estimate_preview(
    sample: Sample, definition: SegmentDefinition, shown: int = SAMPLE
) -> dict[str, Any]:
    """Return a preview (the keys of the exact one) estimated from the sample, with
    ``estimate``, ``margin``, ``low``, ``high`` and ``fraction`` (of persons sampled)."""
    found = evaluate_preview(
        sample.rows.lazy(), sample.touchpoints.lazy, sample.as_of, definition, shown
    )
    size = _figure(found["members"], sample)
    return found | {
        "id": definition.id,
        "name": definition.name,
        "as_of": sample.as_of,
        "snapshot": sample.build,
        "members": size["value"],
        "persons": sample.persons,
        "share": found["members"] / sample.size if sample.size else 0.0,
        "by_tier": {k: scaled(n, sample) for k, n in found["by_tier"].items()},
        "by_stage": {k: scaled(n, sample) for k, n in found["by_stage"].items()},
        "by_channel": {k: scaled(n, sample) for k, n in found["by_channel"].items()},
        "conditions": [
            c | {"members_meeting": scaled(c["members_meeting"], sample)}
            for c in found["conditions"]
        ],
        "estimate": True,
        "margin": size["margin"],
        "low": size["low"],
        "high": size["high"],
        "fraction": sample.fraction,
    }


def estimate_plan(r: redis.Redis, sample: Sample, definition: SegmentDefinition) -> dict[str, Any]:
    """Return a definition's plan entry (the keys of the exact one, and ``as_of``)
    estimated from the sample, with the ± of ``added`` and ``removed`` and ``fraction``."""
    stored = definitions.get_segment(r, definition.id)
    current = {} if stored is None else {definition.id: stored}
    (entry,) = evaluate_plan(
        sample.rows.lazy(), sample.touchpoints.lazy(), sample.as_of, current, [definition]
    )
    figures = {k: _figure(entry[k], sample) for k in ("members_now", "members_after")}
    moved = {k: _figure(entry[k], sample) for k in ("added", "removed")}
    return entry | {
        "as_of": sample.as_of,
        **{k: f["value"] for k, f in (figures | moved).items()},
        "added_margin": moved["added"]["margin"],
        "removed_margin": moved["removed"]["margin"],
        "margin": figures["members_after"]["margin"],
        "estimate": True,
        "fraction": sample.fraction,
    }
