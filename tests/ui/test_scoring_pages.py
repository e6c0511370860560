"""The scoring pages through the Flask test client: the model shown, live validation, the
plan over a real build, applying, bad input and roles."""

from __future__ import annotations

from html import unescape

import polars as pl
import pytest

from dmp.matrix import builds, snapshots
from dmp.matrix.rescoring import plan_rescoring
from dmp.storage import keyspace
from segments.scoring import DAY_MS, default_model_text, parse_model
from tests.factories import NOW, make_hit, make_identify, send_hits
from tests.matrix.test_build import MODEL  # a marketer's fit rule, a download, pricing


@pytest.fixture
def built(redis, drain, config):
    """A build of anna (a marketer with a download: an MQL) and bob (pages only)."""
    day = DAY_MS
    send_hits(
        redis,
        make_hit(uid="c-anna", timestamp=NOW - 3 * day, url="https://acme.de/pricing"),
        make_identify("anna@acme.de", uid="c-anna", job_title="Head of Marketing"),
        make_hit(uid="c-anna", type="track", event="whitepaper_download", timestamp=NOW - 4 * day),
        make_hit(uid="c-bob", timestamp=NOW - 2 * day),
        make_identify("bob@acme.de", uid="c-bob", job_title="Engineer"),
    )
    drain()
    redis.set(keyspace.SCORING_MODEL, MODEL)
    return builds.build(redis, config, as_of_ms=NOW)


def test_the_model_in_use_is_shown_readably(as_viewer) -> None:
    """Without an applied model the default one is shown: rules, half-life, MQL, YAML."""
    html = as_viewer.get("/ui/scoring/").get_data(as_text=True)
    assert "none has been applied yet" in html
    assert "demo request" in html and "halved every 30 days" in html
    assert "a Lead-Score of 60 or more" in html and "whitepaper_download" in html
    assert "Edit the model" not in html  # a viewer changes nothing


def test_live_validation_names_the_path(as_marketer) -> None:
    """The check answers a fragment naming where the model is wrong, or that it is valid."""
    bad = MODEL.replace("points: 40", "points: lots")
    res = as_marketer.post("/ui/scoring/check", {"model": bad})
    text = res.get_data(as_text=True)
    assert res.status_code == 200 and "activity.rules[0].points" in text
    assert "expected a number" in text
    good = as_marketer.post("/ui/scoring/check", {"model": MODEL}).get_data(as_text=True)
    assert "Valid: 1 fit rules, 2 activity rules" in good


def test_a_viewer_may_check_but_not_apply(as_viewer, redis) -> None:
    """Validation only reads (viewers may); applying is refused with 403."""
    assert as_viewer.post("/ui/scoring/check", {"model": MODEL}).status_code == 200
    assert as_viewer.post("/ui/scoring/apply", {"model": MODEL}).status_code == 403
    assert redis.get(keyspace.SCORING_MODEL) is None


def test_applying_stores_the_model_and_says_when_it_counts(as_marketer, redis) -> None:
    """Apply stores the YAML as `dmp scoring apply` does; the page says the next build."""
    res = as_marketer.post("/ui/scoring/apply", {"model": MODEL})
    assert res.status_code == 303
    assert redis.get(keyspace.SCORING_MODEL) == MODEL
    html = as_marketer.get(res.headers["Location"]).get_data(as_text=True)
    assert "The model is applied" in html and "marketer" in html


def test_bad_yaml_is_not_applied(as_marketer, redis) -> None:
    """Bad YAML, an empty model or one too long re-render the editor (422), not stored."""
    for text, message in (
        ("fit: [", "model"),
        ("", "The model is empty."),
        ("#" * 70_000, "too long"),
        (MODEL.replace("medium", "huge"), "stages.mql.tier_gte"),
    ):
        res = as_marketer.post("/ui/scoring/apply", {"model": text})
        assert res.status_code == 422 and message in res.get_data(as_text=True)
    assert redis.get(keyspace.SCORING_MODEL) is None


def test_a_megabyte_is_refused(as_marketer, redis) -> None:
    """A 1 MB body is refused before it is read (413, with the error page)."""
    res = as_marketer.post("/ui/scoring/apply", {"model": "x" * 1_000_000})
    assert res.status_code == 413 and "too large" in res.get_data(as_text=True)
    assert redis.get(keyspace.SCORING_MODEL) is None


def test_the_plan_without_a_build_says_so(as_marketer) -> None:
    """Before the first build the plan explains that it needs one."""
    res = as_marketer.post("/ui/scoring/plan", {"model": MODEL}, headers={"HX-Request": "true"})
    assert res.status_code == 200 and "No matrix build yet" in res.get_data(as_text=True)


def test_the_same_model_changes_nobody(built, redis, config) -> None:
    """Planned with the model the build used, everyone keeps score band and stage."""
    plan = plan_rescoring(redis, config, parse_model(MODEL))
    assert plan.persons == built.persons == 2
    assert plan.changed(plan.bands) == 0 and plan.changed(plan.stages) == 0
    assert not plan.read_touchpoints and plan.examples == ()


@pytest.mark.parametrize(
    ("change", "reads_log"),
    [
        (("points: 30", "points: 5"), False),  # anna's fit drops: out of the MQL band
        (("score_gte: 60", "score_gte: 0"), False),  # bob becomes an MQL
        (("whitepaper_download", "page"), True),  # a new activity condition
        (("half_life_days: 30", "half_life_days: 2"), True),
    ],
)
def test_the_plan_agrees_with_a_build_of_the_new_model(built, redis, config, change, reads_log):
    """What the plan says a model gives is what a build with it gives."""
    new = MODEL.replace(*change)
    plan = plan_rescoring(redis, config, parse_model(new))
    assert plan.read_touchpoints is reads_log
    before = pl.read_parquet(snapshots.latest_build(config)[0]).select("person_id", "score")
    redis.set(keyspace.SCORING_MODEL, new)
    builds.build(redis, config, as_of_ms=NOW)
    after = pl.read_parquet(snapshots.latest_build(config)[0])
    moved = {e.person_id: (e.score_after, e.stage_after) for e in plan.examples}
    for pid, score, stage in after.select("person_id", "score", "stage").iter_rows():
        if pid in moved:
            assert moved[pid] == (score, stage)
    stages = after.group_by("stage").len()
    planned = {m.after: 0 for m in plan.stages}
    for m in plan.stages:
        planned[m.after] += m.persons
    assert planned == dict(stages.iter_rows())
    assert plan.changed(plan.bands) + plan.changed(plan.stages) > 0 and before.height == 2


def test_the_plan_page_shows_from_to_tables_and_examples(built, as_marketer) -> None:
    """The plan page counts changes, draws the from→to tables and links the persons."""
    new = MODEL.replace("score_gte: 60", "score_gte: 0")
    res = as_marketer.post("/ui/scoring/plan", {"model": new})
    html = res.get_data(as_text=True)
    assert res.status_code == 200
    assert "Over the 2 persons" in html and "1 change stage" in html
    assert 'href="/ui/persons/' in html and "Stage now" in html


def test_the_plan_of_a_bad_model_names_the_problem(as_marketer) -> None:
    """A plan of invalid YAML is a 422 naming the path."""
    res = as_marketer.post("/ui/scoring/plan", {"model": "activity: {half_life_days: 0}"})
    assert res.status_code == 422 and "activity.half_life_days" in res.get_data(as_text=True)


def test_the_editor_starts_from_the_model_in_use(as_marketer, redis) -> None:
    """The editor's textarea holds the applied model (the default before one)."""
    html = unescape(as_marketer.get("/ui/scoring/edit").get_data(as_text=True))
    assert "half_life_days: 30" in html and "demo_request" in html
    assert default_model_text().splitlines()[0] in html
