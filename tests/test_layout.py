"""The import rule of docs/architecture.md: packages import only the layers below them, the
pure ``segments`` package only ``dmp.records``, and no module imports itself round a circle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dmp", "collectors", "segments", "exporters")

# Bottom to top: a module may import its own layer and those below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("dmp.records", "dmp.config", "dmp.logs"),
    ("dmp.storage",),
    ("dmp.people", "dmp.access", "dmp.synth"),
    ("dmp.ingest",),
    ("dmp.matrix",),
    ("dmp.membership",),
    ("dmp.privacy",),
    ("dmp.web",),
    ("collectors", "exporters"),
    ("dmp.ui",),  # the marketer UI shows site snippets and destinations too
    ("dmp.app", "dmp.serve"),
    ("dmp.cli", "dmp.__main__"),
)
CORE = ("dmp.storage", "dmp.people", "dmp.access", "dmp.ingest", "dmp.matrix", "dmp.membership")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> set[str]:
    """Return the project modules ``path`` imports (at module level or in functions)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    return {
        # ``from dmp import synth`` names the package too; its __init__ holds no code.
        name: {m for m in _imports(path, name) if m in files and m not in (name, *PACKAGES)}
        for name, path in files.items()
    }


def _layer(module: str) -> int:
    for rank, layer in enumerate(LAYERS):
        if any(module == top or module.startswith(f"{top}.") for top in layer):
            return rank
    raise AssertionError(f"{module} is in no layer of the import rule: add it to LAYERS")


def test_every_module_imports_only_its_layer_and_below() -> None:
    """No module reaches up: the core never imports the web, the collectors or the CLI."""
    wrong = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if not module.startswith("segments")
        for target in targets
        if not target.startswith("segments") and _layer(target) > _layer(module)
    ]
    assert wrong == []


def _imports_from(sources: tuple[str, ...], allowed) -> list[tuple[str, str]]:
    """Return (module, target) for imports of modules under ``sources`` not ``allowed``."""
    graph = _graph()
    return [
        (module, target)
        for module in graph
        if module.startswith(sources)
        for target in graph[module]
        if not allowed(target)
    ]


def test_core_packages_do_not_import_collectors() -> None:
    """Ingest, storage, people and the rest of the core work without the collectors."""
    above = ("collectors", "dmp.web", "dmp.cli", "dmp.app", "dmp.serve")
    assert _imports_from(CORE, lambda target: not target.startswith(above)) == []


def test_segments_imports_nothing_of_dmp_but_its_records() -> None:
    """The rule language and matrix package is pure: frames in, frames out."""
    pure = ("segments", "dmp.records")
    assert _imports_from(("segments",), lambda target: target.startswith(pure)) == []


def test_the_import_graph_has_no_circles() -> None:
    """Depth-first search finds no module that imports itself through others."""
    graph, state, circles = _graph(), {}, []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                circles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_the_layers_name_real_packages() -> None:
    """Every name in the rule is a module or package of the tree (the rule cannot rot)."""
    names = set(_graph())
    missing = [top for layer in LAYERS for top in layer if top not in names]
    assert missing == []


def test_package_inits_hold_no_imports_but_the_clis() -> None:
    """Importing a module runs its packages' __init__ first; an __init__ that imported
    modules would add edges the graph above does not see. Only the CLI's, the one place
    its commands are added, imports anything."""
    wrong = [
        str(init.relative_to(ROOT))
        for pkg in PACKAGES
        for init in (ROOT / pkg).rglob("__init__.py")
        if init != ROOT / "dmp" / "cli" / "__init__.py"
        and any(
            isinstance(node, ast.Import | ast.ImportFrom)
            and getattr(node, "module", None) != "__future__"
            for node in ast.walk(ast.parse(init.read_text()))
        )
    ]
    assert wrong == []
