"""Where the dashboard and Grafana trees are: in a checkout or inside the installed package.

The repository keeps ``dashboard/`` and ``grafana/`` at its root; the wheel carries them as
``jeeves_control_tower.dashboard`` and ``jeeves_control_tower.grafana`` (see setup.py). A
checkout next to the running source wins over an installed copy, so ``PYTHONPATH=src`` runs
and worktrees use their own files.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

__all__ = ["AssetNotFound", "asset_dir", "grafana_files"]

Asset = Literal["dashboard", "grafana"]
_SOURCE = Path(__file__).resolve().parent  # src/jeeves_control_tower in a checkout


class AssetNotFound(LookupError):
    """Neither a checkout nor the installed package holds the requested tree."""


def asset_dir(name: Asset) -> Path:
    """The directory of ``name``: ``<checkout>/<name>`` when this module runs from a checkout's
    ``src/``, else the installed ``jeeves_control_tower.<name>`` package."""
    if _SOURCE.parent.name == "src":
        checkout = _SOURCE.parent.parent / name
        if checkout.is_dir():
            return checkout
    try:
        spec = importlib.util.find_spec(f"jeeves_control_tower.{name}")
    except ImportError:
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        if Path(location).is_dir():
            return Path(location)
    raise AssetNotFound(f"the {name} files are not installed with jeeves_control_tower")


def grafana_files(root: Path) -> Iterator[Path]:
    """Every file a Grafana/Prometheus deployment uses under ``root`` (relative paths, sorted):
    dashboards, provisioning, alert rules and their tests; not the Python that generates them."""
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        hidden = any(part.startswith((".", "__")) for part in relative.parts)
        if path.is_file() and path.suffix not in {".py", ".pyc"} and not hidden:
            yield relative
