"""scripts/minimum_constraints.py: the constraints file scripts/test-minimums installs."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "minimum_constraints.py"

PYPROJECT = """
[project]
name = "Demo_Pkg"
dependencies = ["alpha>=1.2", "beta"]
[project.optional-dependencies]
one = ["Gamma.Lib[fast] >= 0.54b0, <2 ; python_version >= '3.11'", "demo-pkg[two]"]
two = ["delta<3", "alpha>=1.2"]
"""


def constraints(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pyproject.toml").write_text(text)
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "pyproject.toml")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_every_lower_bound_becomes_a_pin(tmp_path: Path) -> None:
    done = constraints(tmp_path, PYPROJECT)
    assert done.returncode == 0, done.stderr
    # no bound -> no pin; an upper bound alone -> no pin; the project's own extras skipped
    assert done.stdout.splitlines() == ["alpha==1.2", "gamma-lib==0.54b0"]


def test_two_different_lower_bounds_are_an_error(tmp_path: Path) -> None:
    done = constraints(tmp_path, PYPROJECT.replace('"alpha>=1.2"]', '"alpha>=1.3"]'))
    assert done.returncode != 0 and "alpha: two lower bounds" in done.stderr


def test_the_projects_own_bounds_are_all_pinned(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(ROOT / "pyproject.toml")],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    pinned = {line.split("==")[0] for line in done.stdout.splitlines()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [project["dependencies"], *project["optional-dependencies"].values()]
    for requirement in (r for group in declared for r in group if ">=" in r):
        name = requirement.split(">=")[0].split("[")[0].strip().lower().replace("_", "-")
        assert name in pinned or name == "jeeves-control-tower"
