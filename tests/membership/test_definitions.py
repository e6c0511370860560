"""Segment definitions: files and folders, versions, bad definitions refused whole."""

from __future__ import annotations

import json

import pytest

from dmp.cli import cli, main
from dmp.membership import definitions
from tests.factories import run_synth

HOT = """
id: hot-leads
name: Hot leads
where:
  all:
    - score: {gte: 50}
    - channel: email
"""


def test_apply_stores_a_version_per_change(runner, redis, tmp_path):
    """Applying the same definition twice stores it once; a change is version 2."""
    path = tmp_path / "hot.yaml"
    path.write_text(HOT)
    first = json.loads(runner.invoke(cli, ["segments", "apply", str(path), "--json"]).output)
    again = json.loads(runner.invoke(cli, ["segments", "apply", str(path), "--json"]).output)
    assert first == [{"id": "hot-leads", "version": 1, "changed": True}]
    assert again == [{"id": "hot-leads", "version": 1, "changed": False}]
    path.write_text(HOT.replace("gte: 50", "gte: 60"))
    third = json.loads(runner.invoke(cli, ["segments", "apply", str(path), "--json"]).output)
    assert third == [{"id": "hot-leads", "version": 2, "changed": True}]
    kept = definitions.versions(redis, "hot-leads")
    assert [v["version"] for v in kept] == [1, 2]
    assert kept[0]["definition"]["where"]["all"][0] == {"score": {"gte": 50}}
    listed = json.loads(runner.invoke(cli, ["segments", "list", "--json"]).output)
    assert [(s["id"], s["version"]) for s in listed] == [("hot-leads", 2)]


def test_a_folder_applies_every_file(runner, redis, tmp_path):
    """Every .yaml/.json file in a folder is applied; a list or several documents per file."""
    (tmp_path / "a.yaml").write_text(HOT + "---\nid: cold\nwhere: {score: {lt: 5}}\n")
    (tmp_path / "b.json").write_text(
        json.dumps([{"id": "dach", "where": {"country": {"in": ["DE", "AT"]}}}])
    )
    (tmp_path / "notes.txt").write_text("ignored")
    result = runner.invoke(cli, ["segments", "apply", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert {s.definition.id for s in definitions.list_segments(redis)} == {
        "hot-leads",
        "cold",
        "dach",
    }


WHERE = "where: {score: {gte: 1}}"


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"a.yaml": f"id: Hot Leads\n{WHERE}"}, "a.yaml[0].id: expected lowercase"),
        (
            {"a.yaml": "id: x\nwhere: {all: [{score: {gte: fifty}}]}"},
            "where.all[0].score.gte: expected a number",
        ),
        ({"a.yaml": "id: x\n"}, "a segment needs where"),
        ({"a.yaml": f"id: x\n{WHERE}\ncolour: red"}, "a.yaml[0].colour: unknown key"),
        ({"a.yaml": "id: x\nwhere: [\n"}, "not valid YAML"),
        (
            {"a.yaml": f"id: x\n{WHERE}", "b.yaml": "id: x\nwhere: {score: {gte: 2}}"},
            "segment 'x' is defined in more than one file",
        ),
    ],
)
def test_bad_definitions_store_nothing(redis, main_argv, tmp_path, capsys, files, message):
    """One bad definition refuses the whole apply: exit 2, one line naming file and path."""
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "good.yaml").write_text(HOT)
    with pytest.raises(SystemExit) as ended:
        main([*main_argv, "segments", "apply", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert ended.value.code == 2 and message in err and len(err.splitlines()) == 1
    assert definitions.list_segments(redis) == []


def test_every_bad_definition_is_reported_with_its_file(redis, main_argv, tmp_path, capsys):
    """Several bad definitions, in one file and in two: each has a line naming its file and
    path, then one line saying nothing was stored; exit 2."""
    (tmp_path / "a.yaml").write_text(
        "- {id: Bad Id, where: {tier: high}}\n- {id: ok, where: {tier: high}}\n"
        "- {id: y, where: {score: {gte: fifty}}}\n"
    )
    (tmp_path / "b.yaml").write_text("id: z\nwhere: {tier: high}\ncolour: red\n")
    with pytest.raises(SystemExit) as ended:
        main([*main_argv, "segments", "apply", str(tmp_path)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert ended.value.code == 2 and len(lines) == 4, lines
    assert "a.yaml[0].id: expected lowercase" in lines[0]
    assert "a.yaml[2].where.score.gte: expected a number" in lines[1]
    assert "b.yaml[0].colour: unknown key" in lines[2]
    assert "3 segment definitions cannot be used" in lines[3] and "nothing was stored" in lines[3]
    assert definitions.list_segments(redis) == []


def test_plan_shows_who_a_change_adds_and_removes(runner, redis, config, tmp_path):
    """`segments plan` evaluates the new and the stored version on the latest matrix."""
    run_synth(runner, 150, 40, 5)
    assert runner.invoke(cli, ["matrix", "build"]).exit_code == 0
    path = tmp_path / "seg.yaml"
    path.write_text("id: active\nwhere: {touchpoints_30d: {gte: 10}}\n")
    first = json.loads(runner.invoke(cli, ["segments", "plan", str(path), "--json"]).output)
    (seg,) = first["segments"]
    assert seg["version_now"] is None and seg["members_now"] == 0
    assert seg["added"] == seg["members_after"] > 0 and seg["removed"] == 0
    assert runner.invoke(cli, ["segments", "apply", str(path)]).exit_code == 0
    path.write_text("id: active\nwhere: {touchpoints_30d: {gte: 20}}\n")
    second = json.loads(runner.invoke(cli, ["segments", "plan", str(path), "--json"]).output)
    (seg,) = second["segments"]
    assert seg["version_now"] == 1 and seg["changed"] and seg["added"] == 0
    assert seg["members_now"] - seg["removed"] == seg["members_after"]
    assert len(seg["sample_removed"]) == min(5, seg["removed"])
    assert definitions.versions(redis, "active")[-1]["version"] == 1  # plan stores nothing
    text = runner.invoke(cli, ["segments", "plan", str(path)]).output
    assert "active (v1):" in text


def test_plan_without_a_matrix_exits_2(redis, main_argv, tmp_path, capsys):
    """Planning needs a matrix build: one clear line, exit 2."""
    path = tmp_path / "seg.yaml"
    path.write_text(HOT)
    with pytest.raises(SystemExit) as ended:
        main([*main_argv, "segments", "plan", str(path)])
    assert ended.value.code == 2 and "run `dmp matrix build` first" in capsys.readouterr().err
