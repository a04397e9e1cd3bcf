"""``jeeves_control_tower.testing`` sits on top: the library never imports it, and its
harness does not pull in pytest (only the conformance submodule does)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "jeeves_control_tower"


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    else:
        parts.pop()  # the package the module is in
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = parts[: len(parts) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_no_library_module_imports_the_testing_package() -> None:
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "testing" not in path.relative_to(PACKAGE).parts
        and any(
            name == "jeeves_control_tower.testing"
            or name.startswith("jeeves_control_tower.testing.")
            for name in imported_modules(path)
        )
    ]
    assert offenders == []


def test_the_resolver_sees_the_testing_package_import_itself() -> None:
    # The check above can fail: the resolver finds a relative import of the package.
    found = imported_modules(PACKAGE / "testing" / "__init__.py")
    assert "jeeves_control_tower.testing.transport.TestTransport" in found


def test_the_harness_imports_without_pytest() -> None:
    code = (
        "import sys\n"
        "import jeeves_control_tower.testing as t\n"
        "assert t.TestTransport is not None\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest')))\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PACKAGE.parent), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
