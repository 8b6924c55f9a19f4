"""The package's shape: each role imports only roles below it, and no module
imports itself back through others (the layout in DESIGN.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sidecar"
# Lower layers never import higher ones; roles on one layer don't import each other.
LAYERS = {
    "denials": 0,
    "access": 1, "complexity": 1,
    "policy": 2,
    "edge": 3,
    "tools": 4,
    "cli": 5, "__main__": 6,
}


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts): p
            for p in PACKAGE.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sidecar"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("sidecar"))
    return found


def _role(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


MODULES = _modules()
GRAPH = {name: {i for i in _imports(path) if i in MODULES and i != name}
         for name, path in MODULES.items()}


def test_the_top_of_the_package_is_the_cli_the_entry_point_and_the_roles():
    top = sorted(p.name for p in PACKAGE.iterdir() if not p.name.startswith("__pycache__"))
    assert top == ["__init__.py", "__main__.py", "access", "cli.py", "complexity", "denials.py",
                   "edge", "policy", "tools"]


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.endswith("__init__")))
def test_no_role_imports_a_role_above_it_or_beside_it(module):
    role = _role(module)
    for target in GRAPH[module]:
        other = _role(target)
        if other in ("", role):
            continue
        assert LAYERS[other] < LAYERS[role], f"{module} imports {target}: {role} may not use {other}"


def test_no_import_cycles():
    state: dict[str, int] = {}

    def visit(name, trail):
        state[name] = 1
        for nxt in GRAPH[name]:
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(trail + [name, nxt]))
            if nxt not in state:
                visit(nxt, trail + [name])
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [])
