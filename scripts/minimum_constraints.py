"""Print a pip constraints file that pins every declared lower bound: ``pkg>=x`` -> ``pkg==x``.

    python3 scripts/minimum_constraints.py [pyproject.toml] > constraints.txt

Reads ``[project] dependencies`` and every optional-dependency group; the project's own
extras (``jeeves-control-tower[...]``) are skipped. A requirement with no ``>=`` has no
declared minimum and is left to pip. Two lower bounds for one package must agree.
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*)")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def minimums(project: dict[str, Any]) -> dict[str, str]:
    """``{normalised name: lowest declared version}`` for every ``>=`` bound in ``project``
    (the ``[project]`` table of a pyproject.toml)."""
    groups: list[Iterable[str]] = [project.get("dependencies", [])]
    groups += project.get("optional-dependencies", {}).values()
    own = normalise(str(project["name"]))
    found: dict[str, str] = {}
    for requirement in (r for group in groups for r in group):
        match = REQUIREMENT.match(requirement)
        if match is None:
            raise ValueError(f"cannot parse requirement {requirement!r}")
        name, specifiers = normalise(match[1]), match[2]
        if name == own:
            continue
        for specifier in specifiers.split(","):
            if specifier.strip().startswith(">="):
                version = specifier.strip()[2:].strip()
                if found.setdefault(name, version) != version:
                    raise ValueError(f"{name}: two lower bounds, {found[name]} and {version}")
    return found


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else "pyproject.toml")
    project = tomllib.loads(path.read_text())["project"]
    for name, version in sorted(minimums(project).items()):
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
