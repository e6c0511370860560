"""The documentation: examples that parse, every setting documented, links that resolve."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from dmp.config import Config, load_config
from segments.definition import load_definitions
from segments.language import CHANNELS, COUNT_OPS, NUMBER_FIELDS, ORDERED, TEXT_FIELDS, parse_where
from segments.rules import _SHORTHAND, Op, RuleError  # _SHORTHAND: the filter's keys
from segments.yamltext import load_yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
SEGMENTS_DOC = ROOT / "docs" / "segments.md"
CONFIG_DOC = ROOT / "docs" / "configuration.md"
# Every document a reader of the repository meets: none may hold a path of one machine.
DOCUMENTS = [README, *DOCS, ROOT / "BENCHMARKS.md", ROOT / "RELIABILITY.md"]

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"""\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
URL = re.compile(r"https?://[^\s\"'`<>)\]]+", re.IGNORECASE)
SCHEME = re.compile(r"^[a-z][a-z0-9+.\-]*:", re.IGNORECASE)
# The README's URLs are examples to copy, never links to follow: the local server, or the
# domain reserved for examples (RFC 2606).
EXAMPLE_HOSTS = ("localhost", "127.0.0.1", "example.com")
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|home|root|tmp|Users|mnt)/|site-packages")
SETTING_ROW = re.compile(r"^\| `(DMP_[A-Z0-9_]+)` \| ([^|]*) \| (.*) \|[ \t]*$", re.MULTILINE)
ERROR_ROW = re.compile(r"^\| `(\{.*\})` \| `(.+)` \|[ \t]*$", re.MULTILINE)


def fenced(path: Path, language: str) -> list[tuple[str, str]]:
    """Return ``(where, body)`` of every fenced block of ``language`` in a document."""
    text = path.read_text(encoding="utf-8")
    return [
        (f"{path.name}:{text.count(chr(10), 0, m.start()) + 1}", m.group(2))
        for m in FENCE.finditer(text)
        if m.group(1).strip() == language
    ]


def prose(path: Path) -> str:
    """Return a document without its fenced blocks and code spans: what renders as text."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return CODE_SPAN.sub("", text)


def slug(heading: str) -> str:
    """Return the anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Return the anchors of a document's headings."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*$", text, re.MULTILINE)}


EXAMPLES = [block for path in (README, *DOCS) for block in fenced(path, "yaml")]
ERRORS = ERROR_ROW.findall(SEGMENTS_DOC.read_text(encoding="utf-8"))


@pytest.mark.parametrize(("where", "text"), EXAMPLES, ids=[w for w, _ in EXAMPLES])
def test_every_yaml_example_is_a_definition_dmp_accepts(where, text):
    """Each YAML block of the README and docs/ parses as a segment definition file."""
    assert load_definitions(text, where)


def _walk(node: Any, seen: dict[str, set[str]], kind: str = "condition") -> None:
    """Collect the condition keys, touchpoint filter keys, operators and channels used."""
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        seen[kind].add(key)
        if key in {op.value for op in Op}:
            seen["operator"].add(key)
        if isinstance(value, dict):
            seen["operator"].update(k for k in value if k in {op.value for op in Op})
        if kind == "condition" and key in ("all", "any"):
            for part in value:
                _walk(part, seen)
        elif kind == "condition" and key == "not":
            _walk(value, seen)
        elif key in ("did", "then"):
            _walk(value, seen, "filter")
        elif kind == "condition" and key == "channel":
            seen["channel"].add(value)


def test_every_condition_of_the_language_has_an_example():
    """The reference shows every condition, filter key, count, operator and channel."""
    seen: dict[str, set[str]] = {k: set() for k in ("condition", "filter", "operator", "channel")}
    for where, text in fenced(SEGMENTS_DOC, "yaml"):
        for definition in load_definitions(text, where):
            _walk(definition.source["where"], seen)
    conditions = {"all", "any", "not", "interest", "channel", "trait", "did"}
    conditions |= {*ORDERED, *NUMBER_FIELDS, *TEXT_FIELDS}
    filters = {*_SHORTHAND, "property", "within_days", "then", *COUNT_OPS}
    assert conditions - seen["condition"] == set()
    assert filters - seen["filter"] == set()
    assert {op.value for op in Op} - seen["operator"] == set()
    assert set(CHANNELS) - seen["channel"] == set()


@pytest.mark.parametrize(("where", "message"), ERRORS, ids=[w for w, _ in ERRORS])
def test_each_documented_error_is_the_one_the_parser_gives(where, message):
    """A row of the reference's error table is what parsing its ``where`` says."""
    with pytest.raises(RuleError) as caught:
        parse_where(load_yaml(where, "docs/segments.md"))
    assert str(caught.value).startswith(message)


def test_the_segment_reference_has_its_examples_and_errors():
    """The extraction above found the reference's examples and error table."""
    assert len(fenced(SEGMENTS_DOC, "yaml")) >= 20 and len(ERRORS) >= 10


def setting_of(variable: str) -> str | None:
    """Return the Config field that the environment variable sets (None: none does)."""
    base = load_config(env={})
    try:
        changed = load_config(env={variable: "12345"})
    except ValueError:
        return None
    fields = dataclasses.fields(Config)
    return next((f.name for f in fields if getattr(changed, f.name) != getattr(base, f.name)), None)


def shown(value: Any) -> str:
    """Return a default as the documentation writes it (2.0 as 2)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def setting_rows(path: Path) -> dict[str, tuple[str, str]]:
    """Return the ``| `DMP_…` | default | meaning |`` rows of a document by variable."""
    return {m[0]: (m[1].strip(), m[2].strip()) for m in SETTING_ROW.findall(path.read_text())}


@pytest.mark.parametrize("field", dataclasses.fields(Config), ids=lambda f: f.name)
def test_every_setting_is_documented(field):
    """docs/configuration.md has a row whose variable sets the field, with its default."""
    rows = setting_rows(CONFIG_DOC)
    found = [v for v in rows if setting_of(v) == field.name]
    assert found, f"no row in docs/configuration.md sets {field.name}"
    default, meaning = rows[found[0]]
    if field.default not in (dataclasses.MISSING, ""):
        assert default == f"`{shown(field.default)}`"
    assert len(meaning) > 20


def test_documented_variables_and_defaults_are_the_code_s():
    """Each DMP_* name in the README and docs/ is a setting; each default in a table is right."""
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    for path in (README, *DOCS):
        text = path.read_text(encoding="utf-8")
        for variable in set(re.findall(r"\bDMP_[A-Z0-9_]*[A-Z0-9]", text)):
            assert setting_of(variable), f"{path.name}: {variable} is no setting"
        for variable, (default, _) in setting_rows(path).items():
            if default.startswith("`"):
                assert default == f"`{shown(defaults[setting_of(variable)])}`", variable


def test_the_readme_links_only_inside_the_repository():
    """The README links nowhere outside; its URLs are examples in code (EXAMPLE_HOSTS)."""
    text, rendered = README.read_text(encoding="utf-8"), prose(README)
    targets = LINK.findall(rendered) + HTML_LINK.findall(rendered)
    assert [t for t in targets if SCHEME.match(t) or t.startswith("//")] == []
    assert URL.findall(rendered) == [] and "www." not in rendered
    hosts = {urlsplit(url).hostname for url in URL.findall(text)}
    assert hosts and all(
        h in EXAMPLE_HOSTS or h.endswith(".example.com") for h in hosts if h is not None
    ), hosts


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_relative_links_point_at_files_that_exist(path):
    """Each relative link of the README and docs/ names a file (and heading) of the repository."""
    rendered = prose(path)
    targets = LINK.findall(rendered) + HTML_LINK.findall(rendered)
    assert targets or path != README
    for target in targets:
        if SCHEME.match(target):
            continue  # outside links: the README has none (above)
        file, _, fragment = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.is_relative_to(ROOT) and linked.exists(), target
        if fragment and linked.suffix == ".md":
            assert fragment in anchors(linked), target


def test_the_readme_links_every_document_in_docs():
    """No page of docs/ is an orphan: the README links each."""
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in LINK.findall(prose(README))}
    assert DOCS and [p.name for p in DOCS if p.resolve() not in linked] == []


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: p.name)
def test_no_document_holds_a_path_of_one_machine(path):
    """No document names a folder of the machine it was written on (/work/…, /tmp/…)."""
    assert MACHINE_PATH.findall(path.read_text(encoding="utf-8")) == []


def test_the_license_is_the_apache_license_pyproject_declares():
    """LICENSE holds the full Apache License 2.0, the license pyproject.toml names."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert project["license"] == {"text": "Apache-2.0"}
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) > 170
