"""The segment builder: the form and its YAML give one definition, live checks place each
problem, preview and plan, saving as a new version, bad input and roles."""

from __future__ import annotations

import json
import re
import threading
import time

import pytest

from dmp.cli import cli
from dmp.membership import definitions
from dmp.ui.builderchecks import definition_yaml
from segments.definition import load_definitions
from tests.factories import apply_segments, run_synth

BUILDER = "/ui/segments/builder"
# A nested segment as the form posts it: all of (tier >= medium, score >= 30, any of
# (channel email, did whitepaper_download 2+ times within 30 days then demo_request),
# none of (stage in won, lost)).
FORM = {
    "id": "hot-leads",
    "name": "Hot leads",
    "description": "",
    "iab": "",
    "w-kind": "all",
    "w-0-kind": "tier",
    "w-0-op": "gte",
    "w-0-value": "medium",
    "w-1-kind": "number",
    "w-1-field": "score",
    "w-1-op": "gte",
    "w-1-value": "30",
    "w-2-kind": "any",
    "w-2-0-kind": "channel",
    "w-2-0-value": "email",
    "w-2-1-kind": "did",
    "w-2-1-event": "whitepaper_download",
    "w-2-1-within": "30",
    "w-2-1-count_op": "count_gte",
    "w-2-1-count": "2",
    "w-2-1-then_event": "demo_request",
    "w-2-1-then_within": "14",
    "w-3-kind": "not",
    "w-3-0-kind": "stage",
    "w-3-0-op": "in",
    "w-3-0-values": ["won", "lost"],
}
YAML = """
id: hot-leads
name: Hot leads
where:
  all:
    - tier: {gte: medium}
    - score: {gte: 30}
    - any:
        - channel: email
        - did: {event: whitepaper_download, within_days: 30, count_gte: 2,
                then: {event: demo_request, within_days: 14}}
    - not: {stage: {in: [won, lost]}}
"""


def _fields(html: str) -> dict[str, object]:
    """Return the builder's form fields as a browser would post them (no buttons)."""
    found: dict[str, object] = {}
    for tag in re.finditer(
        r"<(input|select|textarea)\b([^>]*)>(.*?)(?=<(?:/select|/textarea))?", html, re.S
    ):
        attrs = {k: _unescape(v) for k, v in re.findall(r'([\w-]+)="([^"]*)"', tag.group(2))}
        name = attrs.get("name")
        if not name or name in ("csrf_token", "language", "next"):
            continue
        if tag.group(1) == "input" and attrs.get("type") == "checkbox":
            if re.search(r"\bchecked\b", tag.group(2)):
                found.setdefault(name, []).append(attrs["value"])  # type: ignore[union-attr]
            continue
        found[name] = attrs.get("value", "")
    for name, body in re.findall(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', html, re.S):
        chosen = re.search(r'<option value="([^"]*)" selected', body)
        first = re.search(r'<option value="([^"]*)"', body)
        found[name] = (chosen or first).group(1) if (chosen or first) else ""
    for name, body in re.findall(r'<textarea[^>]*name="([^"]+)"[^>]*>(.*?)</textarea>', html, re.S):
        found[name] = _unescape(body)
    return found


def _unescape(text: str) -> str:
    import html

    return html.unescape(text)


def _stored(redis, sid: str) -> str:
    found = definitions.get_segment(redis, sid)
    assert found is not None, f"{sid} was not stored"
    return found.definition.canonical()


def test_the_form_and_the_yaml_store_the_same_definition(as_marketer, redis) -> None:
    """A nested segment built through the form is stored exactly as its YAML would be,
    and the YAML view the form shows reads back as the same definition."""
    saved = as_marketer.post(f"{BUILDER}/save", FORM)
    assert saved.status_code == 303, saved.get_data(as_text=True)[:2000]
    assert saved.headers["Location"] == "/ui/segments/hot-leads"
    (expected,) = load_definitions(YAML)
    assert _stored(redis, "hot-leads") == expected.canonical()
    checked = as_marketer.post(f"{BUILDER}/check", FORM | {"id": "other"})
    shown = _unescape(
        re.search(
            r"<pre [^>]*data-yaml-text>(.*?)</pre>", checked.get_data(as_text=True), re.S
        ).group(1)
    )
    (again,) = load_definitions(shown)
    assert again.source["where"] == expected.source["where"]


def test_use_yaml_fills_the_form_and_saving_it_stores_that_yaml(as_marketer, redis) -> None:
    """'Use YAML' turns the YAML into form fields (a condition the form cannot show kept as
    a read-only block) and saving those fields stores the YAML's definition."""
    text = YAML.replace("hot-leads", "from-yaml").replace(
        "    - score: {gte: 30}\n",
        "    - score: {gte: 30}\n    - did: {property: seats, gte: 10}\n",
    )
    page = as_marketer.post(f"{BUILDER}/form", {"do": "yaml", "yaml": text})
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'name="w-2-1-kind"' not in html
    assert 'value="raw" selected' in html and "property: seats" in html
    fields = _fields(html)
    assert fields["w-3-1-event"] == "whitepaper_download" and fields["id"] == "from-yaml"
    assert as_marketer.post(f"{BUILDER}/save", fields).status_code == 303
    (expected,) = load_definitions(text)
    assert _stored(redis, "from-yaml") == expected.canonical()


def test_editing_keeps_the_id_and_saves_a_new_version(as_marketer, redis) -> None:
    """The builder of a stored segment holds its definition; saving it unchanged stores no
    version, a change stores version 2; the id cannot change; an unknown id is a 404."""
    apply_segments(redis, YAML)
    page = as_marketer.get(f"{BUILDER}/hot-leads")
    assert page.status_code == 200 and 'value="hot-leads" readonly' in page.get_data(as_text=True)
    fields = _fields(page.get_data(as_text=True))
    assert as_marketer.post(f"{BUILDER}/save", fields).status_code == 303
    assert definitions.get_segment(redis, "hot-leads").version == 1
    assert as_marketer.post(f"{BUILDER}/save", fields | {"w-1-value": "40"}).status_code == 303
    assert definitions.get_segment(redis, "hot-leads").version == 2
    moved = as_marketer.post(f"{BUILDER}/save", fields | {"id": "elsewhere"})
    assert moved.status_code == 422 and "stays" in moved.get_data(as_text=True)
    assert as_marketer.get(f"{BUILDER}/nope").status_code == 404


def test_buttons_add_and_remove_conditions_and_groups(as_marketer) -> None:
    """'Add condition' adds one of the chosen kind, 'Add group' a group with a condition,
    'Remove' takes a part out (the rest renumbered)."""
    base = {"id": "x", "w-kind": "all", "w-0-kind": "channel", "w-0-value": "email"}
    added = _fields(
        as_marketer.post(f"{BUILDER}/form", base | {"w-add": "did", "do": "add:w"}).get_data(
            as_text=True
        )
    )
    assert added["w-1-kind"] == "did" and added["w-0-kind"] == "channel"
    grouped = _fields(
        as_marketer.post(f"{BUILDER}/form", base | {"do": "add-all:w"}).get_data(as_text=True)
    )
    assert grouped["w-1-kind"] == "all" and grouped["w-1-0-kind"] == "tier"
    removed = _fields(
        as_marketer.post(f"{BUILDER}/form", grouped | {"do": "remove:w-0"}).get_data(as_text=True)
    )
    assert removed["w-0-kind"] == "all" and "w-1-kind" not in removed


def test_a_new_kind_starts_with_its_own_fields(as_marketer) -> None:
    """Choosing another kind for a condition gives that kind's fields with defaults."""
    posted = {"id": "x", "w-kind": "all", "w-0-kind": "number", "w-0-was": "tier", "do": "refresh"}
    fields = _fields(as_marketer.post(f"{BUILDER}/form", posted).get_data(as_text=True))
    assert fields["w-0-field"] == "score" and fields["w-0-op"] == "gte"


@pytest.mark.parametrize(
    ("change", "status", "said"),
    [
        ({"id": ""}, 422, "expected lowercase letters"),
        ({"id": "Bad Id"}, 422, "expected lowercase letters"),
        ({"id": "preview"}, 422, "reserved"),
        ({"w-1-value": "thirty"}, 422, "where.all[1].score.gte"),
        ({"w-2-1-within": "0"}, 422, "where.all[2].any[1].did.within_days"),
        ({"w-0-kind": "bogus"}, 400, "unknown kind"),
        ({"name": "n" * 3000}, 400, "more than 2,000 characters"),
    ],
)
def test_bad_input_is_said_and_nothing_is_stored(as_marketer, redis, change, status, said) -> None:
    """A save with a bad field re-renders the builder with the problem (never a 500)."""
    got = as_marketer.post(f"{BUILDER}/save", FORM | change)
    assert got.status_code == status
    assert said in got.get_data(as_text=True)
    assert definitions.list_segments(redis) == []


def test_a_problem_is_shown_beside_its_condition(as_marketer) -> None:
    """The live check names the path and puts the problem at the condition it concerns."""
    got = as_marketer.post(f"{BUILDER}/check", FORM | {"w-2-1-count": "2.5"})
    html = got.get_data(as_text=True)
    assert got.status_code == 200 and "where.all[2].any[1].did.count_gte" in html
    assert re.search(r'data-slot="err-w-2-1"[^>]*>expected a whole number', html)
    assert 'data-slot="err-w-0" data-invalid="w-0"></li>' in html


def test_a_duplicate_id_is_refused_on_create(as_marketer, redis) -> None:
    """Creating a segment with an id in use is refused with a message (409), not merged."""
    apply_segments(redis, YAML)
    got = as_marketer.post(f"{BUILDER}/save", FORM | {"name": "Other"})
    assert got.status_code == 409 and "a segment with this id exists" in got.get_data(as_text=True)
    assert definitions.get_segment(redis, "hot-leads").definition.name == "Hot leads"


def test_hostile_yaml_is_refused_with_a_message(as_marketer) -> None:
    """A 200 KB YAML, 30 levels of groups, YAML that is no mapping or not YAML: a message
    in the page, the form kept."""
    big = "id: x\nwhere: {tier: high}\ndescription: " + "x" * 200_000
    deep = "id: deep\nwhere: " + "{not: " * 30 + "{tier: high}" + "}" * 30
    for text, said in (
        (big, "longer than 65,536"),
        ("- 1\n- 2", "expected a mapping"),
        ("id: [", "not valid YAML"),
        ("id: x\ncolour: red\nwhere: {tier: high}", "segment.colour: unknown key"),
    ):
        got = as_marketer.post(f"{BUILDER}/form", FORM | {"do": "yaml", "yaml": text})
        assert got.status_code == 422 and said in got.get_data(as_text=True), said
        assert 'name="w-2-1-event" value="whitepaper_download"' in got.get_data(as_text=True)
    nested = as_marketer.post(f"{BUILDER}/form", FORM | {"do": "yaml", "yaml": deep})
    assert nested.status_code == 200 and "groups nest more than 20 levels deep" in nested.get_data(
        as_text=True
    )
    too_deep = {"id": "x", "w-kind": "all", "-".join(["w"] + ["0"] * 30) + "-kind": "all"}
    assert as_marketer.post(f"{BUILDER}/save", too_deep).status_code == 400


def test_hostile_names_are_text_not_markup(as_marketer, redis) -> None:
    """A name holding markup is stored as written and shown escaped, never as markup."""
    name = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    assert as_marketer.post(f"{BUILDER}/save", FORM | {"name": name}).status_code == 303
    html = as_marketer.get(f"{BUILDER}/hot-leads").get_data(as_text=True)
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert definitions.get_segment(redis, "hot-leads").definition.name == name


def test_a_viewer_may_preview_but_not_save(as_viewer, redis, runner) -> None:
    """A viewer gets the builder, checks, previews and plans, and is refused the save."""
    run_synth(runner, 60, 20)
    assert runner.invoke(cli, ["matrix", "build"]).exit_code == 0
    page = as_viewer.get(f"{BUILDER}/")
    assert page.status_code == 200 and f'formaction="{BUILDER}/save"' not in page.get_data(
        as_text=True
    )
    for part in ("check", "preview", "plan", "form"):
        assert as_viewer.post(f"{BUILDER}/{part}", FORM).status_code == 200, part
    assert as_viewer.post(f"{BUILDER}/save", FORM).status_code == 403
    assert definitions.list_segments(redis) == []


def test_without_a_matrix_the_preview_says_so(as_marketer) -> None:
    """Before the first build, preview and plan say that nobody can be counted yet."""
    assert "No matrix has been built yet" in as_marketer.post(f"{BUILDER}/preview", FORM).get_data(
        as_text=True
    )
    assert "No matrix has been built yet" in as_marketer.post(f"{BUILDER}/plan", FORM).get_data(
        as_text=True
    )
    invalid = as_marketer.post(f"{BUILDER}/preview", FORM | {"w-1-value": "x"})
    assert "once the definition is valid" in invalid.get_data(as_text=True)


def test_preview_and_plan_count_the_matrix(as_marketer, redis, config, runner) -> None:
    """On a built matrix the preview shows the size and share the core computes, each
    condition's count, and the plan who would enter; both in German too."""
    from dmp.membership.preview import preview

    run_synth(runner, 150, 30)
    assert runner.invoke(cli, ["matrix", "build"]).exit_code == 0
    easy = {"id": "known", "w-kind": "all", "w-0-kind": "tier", "w-0-op": "gte", "w-0-value": "low"}
    (definition,) = load_definitions("id: known\nwhere: {all: [{tier: {gte: low}}]}")
    expected = preview(redis, config, definition)
    assert expected["members"] > 0
    shown = as_marketer.post(f"{BUILDER}/preview", easy).get_data(as_text=True)
    assert f'<span class="figure">{expected["members"]:,}</span>' in shown
    assert f'data-slot="meet-w-0">{expected["members"]:,} members meet' in shown
    planned = as_marketer.post(f"{BUILDER}/plan", easy).get_data(as_text=True)
    assert f"from 0 to {expected['members']:,} members" in planned
    assert f"Would enter: {expected['members']:,}" in planned
    german = as_marketer.post(f"{BUILDER}/plan", easy, headers={"Accept-Language": "de"})
    assert "Würden hinzukommen" in german.get_data(as_text=True)
    inline = as_marketer.post(f"{BUILDER}/form", easy | {"do": "preview"}).get_data(as_text=True)
    assert f'<span class="figure">{expected["members"]:,}</span>' in inline


def test_the_yaml_view_reads_back_as_the_same_data() -> None:
    """The YAML view of a definition (bare conditions, quotes, markup) is read back as it."""
    from segments.yamltext import load_yaml

    data = {
        "id": "x",
        "name": 'a "quoted": <b>name</b>',
        "description": "two\nlines",
        "iab": ["271"],
        "where": {"not": {"any": [{"country": "DE"}, {"trait": "crm_id"}]}},
    }
    assert load_yaml(definition_yaml(data), "t") == data
    assert json.dumps(load_yaml(definition_yaml(data), "t"), sort_keys=True) == json.dumps(
        data, sort_keys=True
    )


@pytest.fixture
def busy_background():
    """Hold the builder's background thread busy (a job that waits) until released."""
    from dmp.ui import builderlive

    release, key = threading.Event(), f"blocker-{time.time_ns()}"
    builderlive.BACKGROUND.submit(key, lambda: release.wait(60) and {})
    while builderlive.BACKGROUND.running != key:  # made, not waiting: nothing drops it
        time.sleep(0.01)
    yield release
    release.set()
    builderlive.BACKGROUND.wait(60)


def test_a_large_matrix_is_estimated_first_then_exact(
    as_marketer, redis, config, runner, monkeypatch, busy_background
) -> None:
    """Past EXACT_BELOW persons the preview and plan first say an estimate from the
    build's sample (marked, with its margin, asking again), then the exact figures the
    core computes replace it."""
    from dmp.membership import previewsample
    from dmp.membership.plan import plan
    from dmp.membership.preview import preview
    from dmp.ui import builderlive

    run_synth(runner, 150, 30, seed=3)
    assert runner.invoke(cli, ["matrix", "build"]).exit_code == 0
    monkeypatch.setattr(previewsample, "EXACT_BELOW", 0)
    monkeypatch.setattr(previewsample, "TARGET", 60)
    first = as_marketer.post(f"{BUILDER}/preview", FORM).get_data(as_text=True)
    assert "Preparing a sample" in first and 'class="exact-poll"' in first
    previewsample.wait_for_samples(60)
    estimated = as_marketer.post(f"{BUILDER}/preview", FORM).get_data(as_text=True)
    assert "≈" in estimated and "the exact count follows" in estimated
    assert 'class="exact-poll"' in estimated and "(±" in estimated
    german = as_marketer.post(f"{BUILDER}/plan", FORM, headers={"Accept-Language": "de"})
    assert "Geschätzt aus einer Stichprobe" in german.get_data(as_text=True)
    busy_background.set()
    builderlive.BACKGROUND.wait(60)
    (definition,) = load_definitions(YAML)
    expected = preview(redis, config, definition)
    exact = as_marketer.post(f"{BUILDER}/preview", FORM).get_data(as_text=True)
    assert f'<span class="figure">{expected["members"]:,}</span>' in exact
    assert 'class="exact-poll"' not in exact and "≈" not in exact
    (entry,) = plan(redis, config, [definition])["segments"]
    planned = as_marketer.post(f"{BUILDER}/plan", FORM).get_data(as_text=True)
    assert f"Would enter: {entry['added']:,}" in planned and "exact-poll" not in planned


def test_a_small_matrix_is_exact_at_once(as_marketer, runner) -> None:
    """Under EXACT_BELOW persons the first answer is exact: nothing estimated, no asking."""
    run_synth(runner, 60, 20)
    assert runner.invoke(cli, ["matrix", "build"]).exit_code == 0
    for part in ("preview", "plan"):
        shown = as_marketer.post(f"{BUILDER}/{part}", FORM).get_data(as_text=True)
        assert "computed in" in shown and "exact-poll" not in shown and "≈" not in shown, part


def test_the_background_keeps_the_newest_asked() -> None:
    """While one exact answer is made, only the newest WAITING asked wait; the older are
    dropped (asked again, they queue again); a failure is kept and said."""
    from dmp.ui.builderlive import WAITING, Background, Memo

    memo, release = Memo(), threading.Event()
    background = Background(memo)
    background.submit("slow", lambda: release.wait(60) and {"n": -1})
    while background.running != "slow":
        time.sleep(0.01)
    for n in range(WAITING + 1):
        background.submit(f"k{n}", lambda n=n: {"n": n})
    release.set()
    background.wait(60)
    assert memo.peek("slow") == {"n": -1} and memo.peek("k0") is None
    assert [memo.peek(f"k{n}") for n in range(1, WAITING + 1)] == [
        {"n": n} for n in range(1, WAITING + 1)
    ]
    background.submit("k0", lambda: {"n": 0})
    background.submit("bad", lambda: 1 / 0)
    background.wait(60)
    assert memo.peek("k0") == {"n": 0} and memo.peek("bad") is None
    assert "ZeroDivisionError" in (background.failure("bad") or "")
