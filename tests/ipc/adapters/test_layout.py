"""The adapters package's layering: no import circle, and the wire below the transports."""

from __future__ import annotations

import ast
from pathlib import Path

import jeeves_control_tower.ipc.adapters as adapters

ROOT = Path(adapters.__file__).resolve().parent
PACKAGE = "jeeves_control_tower.ipc.adapters"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


def imports(path: Path) -> set[str]:
    """The modules of this package ``path`` imports (relative imports resolved; a name
    imported from a package counts as that package, or as its submodule if it is one)."""
    here = module_name(path).split(".")
    if path.name != "__init__.py":
        here.pop()
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                found.add(
                    f"{module}.{alias.name}" if f"{module}.{alias.name}" in MODULES else module
                )
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in MODULES}


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}
GRAPH = {name: imports(path) for name, path in MODULES.items()}


def test_no_import_circle() -> None:
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            raise AssertionError(" -> ".join([*trail[trail.index(name) :], name]))
        if name in done:
            return
        for dep in sorted(GRAPH[name]):
            visit(dep, [*trail, name])
        done.add(name)

    for name in sorted(GRAPH):
        visit(name, [])


def test_the_wire_imports_nothing_above_it() -> None:
    wire = f"{PACKAGE}.wire"
    for name, deps in GRAPH.items():
        if name == wire or name.startswith(wire + "."):
            above = {d for d in deps if not (d == wire or d.startswith(wire + "."))}
            assert not above, f"{name} imports {sorted(above)}"


def test_the_graph_sees_the_imports() -> None:
    # The checks above mean something only if relative imports are resolved.
    assert f"{PACKAGE}.wire.fields" in GRAPH[f"{PACKAGE}.wire.entries"]
    assert f"{PACKAGE}.inbound" in GRAPH[f"{PACKAGE}.base"]
