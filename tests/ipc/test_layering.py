"""The core never imports the telemetry: not at import time, not lazily inside a function.

Telemetry reaches the core only through the seam (jeeves_control_tower.ipc.telemetry), so no
module of ``jeeves_control_tower.ipc`` (adapters included) nor ``types`` / ``logging`` names
the observability or instrumentation packages in an import statement or a string."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import jeeves_control_tower

PACKAGE = Path(jeeves_control_tower.__file__).resolve().parent
CORE = [
    *sorted((PACKAGE / "ipc").rglob("*.py")),
    PACKAGE / "types.py",
    PACKAGE / "logging.py",
]
TELEMETRY = (
    "jeeves_control_tower.observability",
    "jeeves_control_tower.instrumentation",
    "jeeves_control_tower._instrumentation",
)


def _module(path: Path) -> list[str]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (relative imports resolved, and each
    imported name counted as a possible submodule)."""
    here = _module(path)
    if path.name != "__init__.py":
        here = here[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def named(path: Path) -> set[str]:
    """Every string constant of ``path`` (docstrings aside) that names a telemetry module
    (importlib and friends would need one)."""
    tree = ast.parse(path.read_text(), str(path))
    docs = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}  # prose
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and id(node) not in docs
        and isinstance(node.value, str)
        and any(t in node.value for t in TELEMETRY)
    }


def _is_telemetry(module: str) -> bool:
    return any(module == t or module.startswith(t + ".") for t in TELEMETRY)


def test_no_core_module_imports_the_telemetry() -> None:
    assert len(CORE) > 50  # the walk found the tree
    for path in CORE:
        bad = sorted(m for m in imported(path) if _is_telemetry(m))
        assert not bad, f"{path.relative_to(PACKAGE)} imports {bad}"
        assert not named(path), f"{path.relative_to(PACKAGE)} names {named(path)}"


def test_the_walk_resolves_relative_imports() -> None:
    # The check above means something only if "from ..x import y" is resolved.
    bus = imported(PACKAGE / "ipc" / "bus" / "bus.py")
    assert "jeeves_control_tower.ipc.telemetry" in bus
    assert "jeeves_control_tower.logging" in bus
    assert _is_telemetry("jeeves_control_tower.observability.instrument")


CORE_ONLY = """
import sys
import jeeves_control_tower.ipc
import jeeves_control_tower.ipc.adapters
import jeeves_control_tower.types
from jeeves_control_tower.ipc import CommBusCoordinator, InMemoryCommBus

bus = InMemoryCommBus(instrument=False)
CommBusCoordinator(None, bus, instrument=False)
loaded = sorted(m for m in sys.modules if m.startswith({telemetry!r}))
assert not loaded, loaded
bus = InMemoryCommBus()  # defaults: the seam finds the built-in telemetry
assert type(bus.telemetry).__name__ == "BusTelemetry", bus.telemetry
print("ok")
"""


def test_the_core_runs_without_loading_the_telemetry() -> None:
    script = textwrap.dedent(CORE_ONLY).replace("{telemetry!r}", repr(TELEMETRY))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"
