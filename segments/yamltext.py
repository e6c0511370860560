"""YAML text as data, safely: capped in size and depth, without aliases or huge numbers.

Segment definitions, scoring models, content catalogs and import mappings are small
files people write. PyYAML's own safe loader still recurses once per nesting level (a
10,000-deep list is a RecursionError), expands aliases without limit (a 449-byte
"billion laughs" file takes minutes and gigabytes) and hands a 5,000-digit number to
``int()``, which refuses it. This loader refuses all three up front, with one short
message as a :class:`RuleError` naming the text's source. It also reads JSON as JSON
means it (``1e-05`` a number, ``"\\ud83d\\ude80"`` one character), which PyYAML's YAML
1.1 does not; :func:`dump_yaml` writes text that it reads back as equal data
(``tests/segments/test_language_properties.py`` tries both).

The loader overrides PyYAML 6 internals (``compose_node``, ``fetch_flow_collection_start``,
``construct_yaml_int``); ``test_the_yaml_loader_hooks_pyyaml_6_still_has`` fails when a
PyYAML release moves them (``construct_yaml_str`` and the dumper's ``represent_str``:
the property tests above fail).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from segments.rules import RuleError

MAX_CHARS = 1_000_000  # a definitions file or a model is a few kB
MAX_DEPTH = 200  # nesting levels; the rule language refuses deeper trees long before
MAX_NUMBER_CHARS = 100  # a number written with more characters is not a setting


class _Refused(yaml.YAMLError):
    """Text the loader will not read (the message says why)."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with a depth cap, no aliases and bounded numbers."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        """Return the next node, refusing aliases and nesting past ``MAX_DEPTH``."""
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _Refused(f"YAML aliases (*{event.anchor}) are not accepted{_line(event)}")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(
                f"YAML nests more than {MAX_DEPTH} levels deep{_line(self.peek_event())}"
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:  # noqa: N803
        """Scan a ``[`` or ``{``, refusing flow nesting past ``MAX_DEPTH`` before composing."""
        if self.flow_level >= MAX_DEPTH:
            raise _Refused(f"YAML nests more than {MAX_DEPTH} levels deep{_line(self)}")
        super().fetch_flow_collection_start(TokenClass)

    def construct_yaml_int(self, node: Any) -> int:
        """Return an integer scalar, refusing one too long to be a setting."""
        _check_number(node)
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node: Any) -> float:
        """Return a float scalar, refusing one too long to be a setting."""
        _check_number(node)
        return super().construct_yaml_float(node)

    def construct_yaml_str(self, node: Any) -> str:
        """Return a text scalar, a surrogate pair escaped the JSON way (``"\\ud83d\\ude80"``,
        as ``json.dumps`` writes 🚀) joined into its one character."""
        text = super().construct_yaml_str(node)
        if any("\ud800" <= ch <= "\udfff" for ch in text):
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")
        return text


# JSON's numbers with an exponent but no dot or no exponent sign (1e-05, 2E3, 1.5e5):
# floats in JSON and YAML 1.2, text in PyYAML's YAML 1.1. A .json file is read here too.
_EXPONENT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_yaml_float)
_Loader.add_constructor("tag:yaml.org,2002:str", _Loader.construct_yaml_str)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT, list("-+0123456789"))


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper, with text holding a YAML line break double-quoted (escaped).

    With ``allow_unicode``, PyYAML writes U+0085, U+2028 and U+2029 raw in plain and
    single-quoted scalars, where a reader folds them into spaces.
    """

    def represent_str(self, data: str) -> Any:
        """Return a text scalar, double-quoted when a YAML line break is in it."""
        if any(ch in data for ch in _BREAKS):
            return self.represent_scalar("tag:yaml.org,2002:str", data, style='"')
        return super().represent_str(data)


_BREAKS = "\x85\u2028\u2029"
_Dumper.add_representer(str, _Dumper.represent_str)
# so that the text "1e3" is written quoted, as the loader reads 1e3 as a number
_Dumper.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT, list("-+0123456789"))


def dump_yaml(data: Any, *, flow: bool = False) -> str:
    """Return data as YAML text (in flow style with ``flow``, else block style with flow
    style for the innermost collections) that :func:`load_yaml` reads as equal data."""
    return yaml.dump(
        data,
        Dumper=_Dumper,
        default_flow_style=True if flow else None,
        sort_keys=False,
        allow_unicode=True,
        width=2**30,  # one line per scalar: no folding
    )


def load_yaml(text: str, source: str) -> Any:
    """Return the data of one YAML (or JSON) document; RuleError(source, why) if refused."""
    documents = _load(text, source, many=False)
    return documents[0] if documents else None


def load_yaml_documents(text: str, source: str) -> list[Any]:
    """Return the data of every YAML document in ``text`` (``---`` separated)."""
    return _load(text, source, many=True)


def _load(text: str, source: str, *, many: bool) -> list[Any]:
    if len(text) > MAX_CHARS:
        raise RuleError(source, f"larger than {MAX_CHARS:,} characters")
    loader = None
    try:
        loader = _Loader(text)  # refuses control characters (a NUL) already
        if many:
            documents = []
            while loader.check_data():
                documents.append(loader.get_data())
            return documents
        return [loader.get_single_data()]
    except _Refused as exc:
        raise RuleError(source, str(exc)) from None
    except yaml.reader.ReaderError as exc:
        said = f"character #x{exc.character:04x} at position {exc.position} is not allowed"
        raise RuleError(source, f"not valid YAML ({said})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise RuleError(source, f"not valid YAML{at}") from None
    except (ValueError, OverflowError) as exc:  # a scalar PyYAML resolved but cannot build
        said = " ".join(str(exc).split())[:80]
        raise RuleError(source, f"not valid YAML ({said})") from None
    except RecursionError:  # a safety net: compose_node caps the depth long before
        raise RuleError(source, "YAML nests too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_number(node: Any) -> None:
    if len(node.value) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number has more than {MAX_NUMBER_CHARS} digits{_line(node)}")


def _line(item: Any) -> str:
    mark = (
        item.get_mark() if isinstance(item, yaml.SafeLoader) else getattr(item, "start_mark", None)
    )
    return f" (line {mark.line + 1})" if mark is not None else ""
