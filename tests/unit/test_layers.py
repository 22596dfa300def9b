"""The layout stays true: no import cycles, and no import from a lower layer to
a higher one (``docs/architecture.md`` draws the layers).

Every ``import`` and ``from ... import`` in ``sclib`` counts, those inside
functions too (a lazy import is still a dependency); only imports under ``if
TYPE_CHECKING:`` are left out, since they never run and only name types.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "sclib"

#: lowest first; a module may import its own layer and those below it. The most
#: specific prefix decides a module's layer.
LAYERS: list[tuple[str, list[str]]] = [
    (
        "base",
        [
            "sclib.errors",
            "sclib.version",
            "sclib.jobtypes",
            "sclib.paths",
            "sclib.models",
            "sclib.settings",
            "sclib.logs",
            "sclib.retry",
            "sclib.secrets",
            "sclib._moved",
        ],
    ),
    ("backends", ["sclib.backends"]),
    ("cores", ["sclib.jobs", "sclib.transfers", "sclib.datasets"]),
    ("services", ["sclib.pipeline", "sclib.monitor", "sclib.migrate"]),
    (
        "front ends",
        [
            "sclib.server",
            "sclib.client",
            "sclib.cli",
            "sclib.demo",
            "sclib.testing",
            "sclib.__main__",
            "sclib",
        ],
    ),
]

#: old paths kept for one release: each only makes itself an alias of its new
#: module, so it imports nothing at module level and is not a node of the graph
SHIMS = {
    "sclib.monitor_report",
    "sclib.migrate_plan",
    "sclib.migrate_store",
    "sclib.demo_server",
    "sclib.datasets.models",
    "sclib.datasets.legacy",
    "sclib.server.secrets",
    "sclib.server.handlers",
    "sclib.server.fields",
    "sclib.server.locks",
    "sclib.server.staging",
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            for alias in node.names:
                full = f"{name}.{alias.name}"
                target = full if full in MODULES else _resolve(name)
                if target:
                    found.add(target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name)
                if target:
                    found.add(target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    found.discard(module)
    return {t for t in found if t.startswith("sclib")}


GRAPH = {m: _imports(m, p) for m, p in MODULES.items() if m not in SHIMS}


def layer_of(module: str) -> int:
    best, depth = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(
                prefix
            ) > depth:
                best, depth = index, len(prefix)
    return best


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer() -> None:
    assert [m for m in MODULES if layer_of(m) < 0] == []


def test_no_import_cycles() -> None:
    assert _cycles(GRAPH) == []


def test_no_cycles_between_packages() -> None:
    """Folders too: no two top-level parts import each other in any way."""
    packages: dict[str, set[str]] = defaultdict(set)
    for module, targets in GRAPH.items():
        top = ".".join(module.split(".")[:2])
        for target in targets:
            other = ".".join(target.split(".")[:2])
            if other != top and other != "sclib" and top != "sclib":
                packages[top].add(other)
    assert _cycles(packages) == []


def test_no_upward_imports() -> None:
    upward = sorted(
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} "
        f"({LAYERS[layer_of(target)][0]})"
        for module, targets in GRAPH.items()
        for target in targets
        if target not in SHIMS and layer_of(target) > layer_of(module)
    )
    assert upward == []


def test_the_worker_never_imports_the_server() -> None:
    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for target in GRAPH.get(todo.pop(), ()):
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen

    assert {m for m in reach("sclib.jobs.worker") if m.startswith("sclib.server")} == (
        set()
    )
    assert {m for m in reach("sclib.cli.worker") if m.startswith("sclib.server")} == (
        set()
    )


@pytest.mark.parametrize("old", sorted(SHIMS))
def test_old_paths_warn_and_alias_the_new_module(old: str) -> None:
    import importlib
    import sys

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match="moved to"):
        module = importlib.import_module(old)
    assert module.__name__ != old
    assert sys.modules[old] is module
