"""Hostile input at the edges: times the event log cannot hold, odd digits, YAML bombs,
huge or broken files, deep JSON, and spreadsheet formulas in CSV exports."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import polars as pl
import pytest
import yaml

from dmp.cli import cli, main
from dmp.ingest.eventlog import scan_events
from dmp.people.identity import IdKind
from dmp.storage import keyspace
from dmp.storage.csvfile import write_csv
from tests.factories import bearer, make_identify, person_of, send_hits

ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)
SMALL_ALIAS = "a: &a [x, x]\nb: [*a, *a]\n"


def _one_line(capsys: pytest.CaptureFixture[str], ended: pytest.ExceptionInfo) -> str:
    """Return the one short error line a CLI run printed (asserting exit code 2)."""
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert ended.value.code == 2, err[:500]
    assert len(err.splitlines()) == 1, err[:500]
    assert err.startswith("dmp: error: ") and len(err) < 300, err[:500]
    assert len(captured.out) < 300 and "\x00" not in err
    return err


# --- times and fields the worker would drop -------------------------------------------


@pytest.mark.parametrize(
    "when",
    [
        "9999999999999",  # epoch ms in the year 2286
        "4102444800000",  # 2100-01-01 exactly: the first time out of range
        "9999-12-31T23:59:59Z",
        "1969-12-31T23:59:59Z",
        "0001-01-01T00:00:00+14:00",
        "١٧٥٧٤٩٤٨٦٠",  # Arabic-Indic digits
        "1757494860²",
        1e20,
        -1,
    ],
)
def test_webhook_refuses_times_the_event_log_cannot_hold(client, redis, import_key, when):
    """An event time outside 1970..2099 (or not ASCII digits) is a 400 naming it; none queued."""
    event = {"email": "anna@acme.de", "event": "open", "time": when}
    auth = bearer(import_key)
    resp = client.post("/hooks/newsletter", json={"events": [event]}, headers=auth)
    assert resp.status_code == 400 and resp.mimetype == "application/problem+json"
    [error] = resp.get_json()["errors"]
    assert error["index"] == 0 and error["reason"].startswith("time: ")
    assert f"(events[0].{error['reason']})" in resp.get_json()["detail"]
    assert redis.xlen(keyspace.partition(0).stream) == 0


def test_csv_rows_with_unstorable_times_are_bad_rows_every_time(runner, redis, config, tmp_path):
    """A far-future time is a bad row (not imported, not remembered); the fixed file imports."""
    path = tmp_path / "nl.csv"
    good = "anna@acme.de,open,2026-09-10T09:00:00Z\n"
    path.write_text(f"email,event,time\n{good}bob@beta.de,open,9999999999999\n")
    for _ in range(2):  # the bad row stays bad: it was never remembered as imported
        result = runner.invoke(cli, ["import", "newsletter", str(path), "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.output[result.output.index("{") :])
        assert report["bad"] == [{"row": 3, "reason": "time: '9999999999999' is out of range"}]
    assert report["imported"] == 0 and report["already_imported"] == 1
    path.write_text(f"email,event,time\n{good}bob@beta.de,open,1757494860000\n")
    result = runner.invoke(cli, ["import", "newsletter", str(path), "--json"])
    report = json.loads(result.output[result.output.index("{") :])
    assert (report["imported"], report["already_imported"], report["bad"]) == (1, 1, [])
    log = scan_events(config.events_dir).collect()
    assert sorted(log["timestamp"].dt.year()) == [2025, 2026]


def test_crm_rows_with_unstorable_times_are_bad_rows(runner, redis, tmp_path):
    """A CRM updated_at beyond 2099 is reported with its row number, not imported."""
    path = tmp_path / "crm.csv"
    path.write_text("email,updated_at\nanna@acme.de,2026-09-01\nbob@b.de,9999999999999\n")
    result = runner.invoke(cli, ["import", "crm", str(path), "--json"])
    report = json.loads(result.output[result.output.index("{") :])
    assert report["imported"] == 1
    assert report["bad"] == [{"row": 3, "reason": "updated_at: '9999999999999' is out of range"}]


@pytest.mark.parametrize("employees", ["²", "5³", "١٢", "1.2³", "12345678901"])
def test_crm_employees_must_be_ascii_digits(runner, redis, tmp_path, employees):
    """Superscripts and other scripts' digits in employees are a bad row, not a crash."""
    path = tmp_path / "crm.csv"
    path.write_text(f"email,employees\nanna@acme.de,120\nbob@b.de,{employees}\n", "utf-8")
    result = runner.invoke(cli, ["import", "crm", str(path), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert report["imported"] == 1
    assert report["bad"] == [
        {"row": 3, "reason": f"employees: {employees!r} is not a whole number"}
    ]


def test_crm_texts_are_cut_to_500_characters(runner, redis, tmp_path):
    """A 10,000-character company or street is kept as its first 500 characters."""
    path = tmp_path / "crm.csv"
    path.write_text(f"email,company,street\nanna@acme.de,{'c' * 10_000},{'s' * 10_000}\n")
    assert runner.invoke(cli, ["import", "crm", str(path)]).exit_code == 0
    traits = person_of(redis, IdKind.EMAIL, "anna@acme.de")["traits"]
    assert traits["company"] == "c" * 500 and traits["address"]["street"] == "s" * 500


# --- CLI: one short line for bad YAML --------------------------------------------------

YAML_COMMANDS = [
    ["segments", "plan"],
    ["segments", "apply"],
    ["scoring", "apply"],
    ["content", "apply"],
    ["import", "crm", "CSV", "--mapping"],
]
BAD_YAML = {
    "deep-flow": ("[" * 10_000 + "]" * 10_000, "nest"),
    "deep-block": ("".join(" " * i + "-\n" for i in range(1000)), "nest"),
    "deep-map": ("{a: " * 10_000 + "1" + "}" * 10_000, "nest"),
    "big-int": ("x: " + "9" * 5000 + "\n", "digits"),
    "alias": (SMALL_ALIAS, "alias"),
    "bad-date": ("x: 2001-13-01\n", "YAML"),
    "huge": ("# " + "x" * 2_000_000 + "\n", "larger than"),
    "nul": ("x: a\x00b\n", "YAML"),
}


@pytest.mark.parametrize("command", YAML_COMMANDS, ids=lambda c: "-".join(c[:2]))
@pytest.mark.parametrize("case", list(BAD_YAML))
def test_bad_yaml_exits_2_with_one_short_line(redis, main_argv, tmp_path, capsys, command, case):
    """Deep nesting, a 5,000-digit number, aliases, a bad date, 2 MB, a NUL: one line, exit 2."""
    text, message = BAD_YAML[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    table = tmp_path / "in.csv"
    table.write_text("email\nanna@acme.de\n")
    args = [str(table) if a == "CSV" else a for a in command]
    with pytest.raises(SystemExit) as ended:
        main([*main_argv, *args, str(path)])
    assert message in _one_line(capsys, ended)


@pytest.mark.parametrize("command", YAML_COMMANDS, ids=lambda c: "-".join(c[:2]))
@pytest.mark.parametrize("content", [b"", b"\xff\xfe x: 1\n", b"x: caf\xe9\n"])
def test_empty_or_non_utf8_yaml_exits_2(redis, main_argv, tmp_path, capsys, command, content):
    """An empty file and one that is not UTF-8 give exit code 2 and one line."""
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    table = tmp_path / "in.csv"
    table.write_text("email\nanna@acme.de\n")
    args = [str(table) if a == "CSV" else a for a in command]
    with pytest.raises(SystemExit) as ended:
        main([*main_argv, *args, str(path)])
    _one_line(capsys, ended)


def test_the_yaml_loader_hooks_pyyaml_6_still_has():
    """segments.yamltext overrides PyYAML 6 internals: a PyYAML that moved them fails here."""
    assert yaml.__version__.split(".")[0] == "6", "segments/yamltext.py was tested on PyYAML 6"
    for hook in ("compose_node", "fetch_flow_collection_start", "construct_yaml_int"):
        assert callable(getattr(yaml.SafeLoader, hook, None)), f"PyYAML has no {hook} now"
    assert "flow_level" in vars(yaml.SafeLoader(""))


def test_alias_bomb_is_refused_at_once(config, redis, tmp_path):
    """A 449-byte billion-laughs YAML ends `segments plan` with one line, not a hang."""
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    env = {**os.environ, "DMP_REDIS_URL": config.redis_url, "DMP_DATA_DIR": str(config.data_dir)}
    done = subprocess.run(
        [sys.executable, "-m", "dmp", "segments", "plan", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "alias" in done.stderr and len(done.stderr) < 300


def test_a_definition_nested_as_deep_as_yaml_allows_is_a_rule_error(
    redis, main_argv, tmp_path, capsys
):
    """A where tree just within the YAML depth cap still ends in the language's one line."""
    where = "{not: " * 90 + "{event: page}" + "}" * 90
    path = tmp_path / "deep.yaml"
    path.write_text(f"id: deep\nname: Deep\nwhere: {where}\n")
    with pytest.raises(SystemExit) as ended:
        main([*main_argv, "segments", "plan", str(path)])
    assert "nest more than" in _one_line(capsys, ended)


# --- CLI: broken CSV files -------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a CSV"),
        (b"\xff\xfeemail,event,time\n", "cannot read"),
        (b"email,event,time\nanna@acme.de,open,2026-09-10\nbob,caf\xe9,x\n", "UTF-8"),
        (b"email,event,time\n" + b"a@b.de,open,2026-09-10\n" * 2000 + b"b,caf\xe9,x\n", "UTF-8"),
        (b"email,event,time\nanna\x00@acme.de,open,2026-09-10T09:00:00Z\n", "email"),
        (b"em\x00ail,event,time\nanna@acme.de,open,2026-09-10T09:00:00Z\n", "no column"),
    ],
    ids=["empty", "bom-garbage", "latin1-row", "latin1-far-row", "nul-cell", "nul-header"],
)
def test_broken_csv_files_exit_2_with_one_short_line(
    redis, main_argv, tmp_path, capsys, content, message
):
    """Empty, non-UTF-8 and NUL-holding files end with exit code 2 and one short line."""
    path = tmp_path / "in.csv"
    path.write_bytes(content)
    with pytest.raises(SystemExit) as ended:
        main([*main_argv, "import", "newsletter", str(path)])
    assert message in _one_line(capsys, ended)


def test_a_50_mb_header_gives_a_short_error(redis, main_argv, tmp_path, capsys):
    """A 50 MB header line is quoted as a short excerpt, not echoed whole."""
    path = tmp_path / "in.csv"
    path.write_text("h" * 50_000_000 + "\nx\n")
    with pytest.raises(SystemExit) as ended:
        main([*main_argv, "import", "newsletter", str(path)])
    assert "no column for 'email'" in _one_line(capsys, ended)


@pytest.mark.parametrize(
    "args",
    [
        ["keys", "revoke", "a" * 5000],
        ["sites", "add", "Acme", "--domain", "x" * 5000],
        ["sites", "remove", "nope\x1b[2J" + "y" * 5000],
    ],
    ids=["key-id", "domain", "site-id"],
)
def test_errors_quoting_long_arguments_stay_one_short_line(redis, main_argv, capsys, args):
    """An error about a 5,000-character argument is one line under 300 characters."""
    with pytest.raises(SystemExit) as ended:
        main([*main_argv, *args])
    assert "\x1b" not in _one_line(capsys, ended)


@pytest.mark.parametrize(
    "as_of", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+14:00", "1969-12-31", "x" * 5000]
)
def test_matrix_build_refuses_an_as_of_outside_1970_to_2099(redis, main_argv, capsys, as_of):
    """--as-of in the year 0 or 10000 (a ValueError traceback before) is one line, exit 2."""
    with pytest.raises(SystemExit) as ended:
        main([*main_argv, "matrix", "build", "--as-of", as_of])
    assert "--as-of" in _one_line(capsys, ended)


def test_a_huge_bad_cell_is_quoted_short(runner, redis, tmp_path):
    """A bad row's reason quotes at most an excerpt of a 1 MB cell."""
    path = tmp_path / "in.csv"
    cell = "x" * 1_000_000
    path.write_text(f"email,event,time\nanna@acme.de,open,2026-09-10\n{cell},open,2026-09-10\n")
    result = runner.invoke(cli, ["import", "newsletter", str(path), "--json"])
    [bad] = json.loads(result.output[result.output.index("{") :])["bad"]
    assert bad["row"] == 3 and bad["reason"].startswith("email: 'xxx")
    assert len(bad["reason"]) < 200


# --- admin API and webhook: odd digits and deep JSON -----------------------------------

PID = "0123456789abcdef"


@pytest.mark.parametrize("limit", ["²", "5³", "١٢", "0", "-1", "1001", "9" * 50, "", " 5"])
def test_limit_takes_only_ascii_whole_numbers(client, admin_key, limit):
    """limit=² or 5³ (which str.isdigit accepts) and out-of-range limits are 400s."""
    auth = bearer(admin_key)
    for path in (f"/api/v1/persons/{PID}", "/api/v1/persons"):
        query = {"limit": limit} if path.endswith(PID) else {"limit": limit, "uid": "c1"}
        resp = client.get(path, query_string=query, headers=auth)
        assert resp.status_code == 400 and resp.mimetype == "application/problem+json"
        assert "limit" in resp.get_json()["detail"]


@pytest.mark.parametrize(
    "body",
    ["[" * 2000 + "]" * 2000, '{"stage": ' + "[" * 1900 + "]" * 1900 + "}", '[{"a":' * 680],
)
def test_deep_json_to_stage_is_a_400(client, admin_key, body):
    """A 2,000-deep JSON array as a stage change is a 400 problem, not a 500."""
    resp = client.post(
        f"/api/v1/persons/{PID}/stage",
        data=body,
        content_type="application/json",
        headers=bearer(admin_key),
    )
    assert resp.status_code == 400 and resp.mimetype == "application/problem+json"


@pytest.mark.parametrize("by", ["\\ud800", "a\\u0000b", "a\\nb"])
def test_a_stage_change_by_unprintable_text_is_a_400(client, admin_key, by):
    """``by`` holding a lone surrogate, a NUL or a newline is refused as a 400."""
    resp = client.post(
        f"/api/v1/persons/{PID}/stage",
        data=f'{{"stage": "sal", "by": "{by}"}}',
        content_type="application/json",
        headers=bearer(admin_key),
    )
    detail = resp.get_json()["detail"]
    # A lone surrogate is refused as the body is read, before any field is looked at.
    assert resp.status_code == 400 and ("by must be" in detail or "lone UTF-16" in detail)


@pytest.mark.parametrize("depth", [900, 5000])
def test_deep_json_with_a_surrogate_to_the_webhook_is_a_400(client, redis, import_key, depth):
    """A deep array ending in a lone surrogate is refused as a 400, not a RecursionError."""
    body = '{"events": ' + "[" * depth + '"\\ud800"' + "]" * depth + "}"
    resp = client.post(
        "/hooks/newsletter",
        data=body,
        content_type="application/json",
        headers=bearer(import_key),
    )
    assert resp.status_code == 400 and resp.mimetype == "application/problem+json"
    assert redis.xlen(keyspace.partition(0).stream) == 0


# --- CSV exports: spreadsheet formulas ---------------------------------------------------

FORMULAS = ['=HYPERLINK("https://evil.example","x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]


def test_csv_cells_that_start_a_formula_are_quoted(tmp_path):
    """Text cells starting with = + - @ tab or CR get a ' first; numbers stay numbers."""
    path = tmp_path / "out.csv"
    frame = pl.DataFrame({"text": [*FORMULAS, "plain", None], "n": [-1.5] * 7 + [2.0]})
    write_csv(frame, path)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["text"] for r in rows] == [*("'" + f for f in FORMULAS), "plain", ""]
    assert [r["n"] for r in rows] == ["-1.5"] * 7 + ["2.0"]


def test_matrix_export_neutralises_formulas(redis, drain, runner, tmp_path):
    """Traits that start like a formula come out of `matrix export -o x.csv` quoted."""
    traits = dict(zip(("company", "job_title", "industry"), FORMULAS[:3], strict=True))
    send_hits(redis, make_identify("anna@acme.de", **traits))
    traits = dict(zip(("company", "job_title", "industry"), FORMULAS[3:], strict=True))
    send_hits(redis, make_identify("bob@beta.de", **traits, country="=1+2"))
    drain()
    assert runner.invoke(cli, ["matrix", "build"]).exit_code == 0
    out = tmp_path / "m.csv"
    assert runner.invoke(cli, ["matrix", "export", "-o", str(out)]).exit_code == 0
    with open(out, newline="", encoding="utf-8") as fh:
        rows = {r["email"]: r for r in csv.DictReader(fh)}
    anna, bob = rows["anna@acme.de"], rows["bob@beta.de"]
    cells = [anna["company"], anna["job_title"], anna["industry"]]
    cells += [bob["company"], bob["job_title"], bob["industry"]]
    assert cells == ["'" + f for f in FORMULAS] and bob["country"] == "'=1+2"
    assert not anna["score"].startswith("'")
    float(anna["score"])  # the numeric column is written as a number
